"""`python -m vineppo.demo CONFIG RUN_DIR EVAL_FILE`: the background RL run of `vineppo demo`
(see `vineppo.demo.runs._BackgroundRun`)."""

import sys

from vineppo.demo.runs import _background_main

sys.exit(_background_main(*sys.argv[1:4]))
