import sys

from vineppo.cli import main

sys.exit(main())
