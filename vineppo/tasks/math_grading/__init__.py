"""MATH answer extraction and grading (spec §3), sandboxed.

Semantics follow the official VinePPO grader in Minerva mode (`tasks/math.py` with
`answer_prefix=None`, `tasks/math_answer_exctraction.py`, `tasks/math_grader_minerva.py`):

1. `extract_math_answer` pulls the answers out of a text in the official priority order and
   normalises each with `strip_string`. The gold answers are re-extracted the same way from the
   gold *solution*.
2. `answer_lists_match` (the official `eval_math`) deduplicates both lists, keeps only the last
   `len(gold)` predictions, and requires every prediction and every gold answer to be matched.
3. A prediction matches a gold answer when the strings are equal or when `math_equal` holds:
   numbers within 1e-3 (also against gold x 1/100 and x 100), element-wise tuples/intervals and
   pmatrix/bmatrix, `a=b` forms, and finally a symbolic check (simplify(a - b) == 0, or the
   numeric values within 1e-3).

Only the symbolic check is expensive or dangerous. It never runs in the calling process: it runs
in a `GraderPool` worker process with a hard per-case timeout, and a hung or crashed worker is
killed and replaced. Everything else here is plain string work written to run in linear time on
hostile input, so the fast paths (string and numeric equality) need no pool.

This is the `official` grading mode. Its only departures from the official code are the
three documented fixes:

- no model text is executed: the official code hands pylatexenc's plain-text rendering to
  sympy's `parse_expr`/`sympify`, which `eval` it; here the same tokens and transformations
  are evaluated by a whitelisted interpreter (`safe_sympy`), inside the worker;
- a symbolic check that times out or crashes is "not equal" and never hangs: the timeout
  bounds a whole case in a killable worker with a memory cap (the official code timed each
  `simplify` only, in a pool, and left `N` and pylatexenc untimed);
- (GSM8K only, see `vineppo.tasks.gsm8k`) golds written with a thousands comma can be matched.

Everything else is reproduced on purpose, including the official quirks: `\\boxed 5` (no
braces) extracts nothing, `parse_digits` deletes every comma (`1,2` equals `12`), interval
bracket kinds are not compared, `\\cdot` is deleted (`2\\cdot3` reads `23`), `%` starts a LaTeX
comment in the rendering (`\\boxed{125\\% dollars}` equals `125`), and a response must box
every distinct value the gold solution boxes.

The `math_verify` mode (`GraderPool.math_verify_many`) uses Hugging Face's math-verify instead,
in the same workers under the same timeout.
"""

from __future__ import annotations

from vineppo.tasks.math_grading.compare import (  # noqa: F401
    NUMERIC_TOLERANCE,
    SymbolicCheck,
    _answer_lists_match,
    _math_equal,
    numbers_match,
    parse_number,
)
from vineppo.tasks.math_grading.extraction import (  # noqa: F401
    clean_extracted_answer,
    extract_boxed_answers,
    extract_last_number,
    extract_math_answer,
    extract_program_output,
    extract_raw_answers,
    strip_string,
)
from vineppo.tasks.math_grading.pool import (  # noqa: F401
    DEFAULT_NUM_WORKERS,
    DEFAULT_TIMEOUT,
    GraderPool,
    answer_lists_match,
    default_grader_pool,
    is_correct_math,
    math_equal,
    shutdown_default_grader_pool,
)
from vineppo.tasks.math_grading.symbolic import (  # noqa: F401
    DEFAULT_WORKER_MEMORY_MB,
    _SymbolicEngine,
    count_unknown_letters,
    latex_to_text,
    math_verify_equal,
    text_allows_eval,
    serve_grader_worker,
    symbolic_gate_allows,
)
