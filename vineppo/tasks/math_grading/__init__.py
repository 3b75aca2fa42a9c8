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

DEPARTURES from the official code (each is also marked "DEPARTURE" where it happens):

- No model text is ever executed. The official code turns LaTeX into plain text (pylatexenc) and
  then calls sympy's `parse_expr`/`sympify` (which use `eval`) on it. Here LaTeX is parsed with a
  real LaTeX grammar (latex2sympy2_extended), only inside the sandboxed worker, and `simplify`
  and `N` only ever see sympy objects. The official guard that refuses symbolic work on text
  with more than two unknown letters or with big exponents is kept, evaluated on an
  approximation of pylatexenc's plain-text rendering (`latex_to_gate_text`).
  Consequence: the official text rendering lost grouping (`\\frac{x+1}{2}` became `x+1/2` and
  `5^{1/2}` became `5^1/2`), so it missed some equalities that a real parse finds (`5^{1/2}` vs
  `\\sqrt{5}`, `\\frac{\\sqrt{5}+1}{2}` vs `\\frac{1+\\sqrt{5}}{2}`); here they are equal. The
  grammar also reads `e` as Euler's number and `\\log` as base 10.
- The timeout bounds a whole case (every symbolic check of one response) instead of each
  `simplify` call separately; the official numeric `N(a) ~ N(b)` step had no timeout at all.
  A timeout or a worker crash counts as "not equal". Workers also have a memory cap.
- Numbers compare as numbers: thousands separators (`5,600`) are removed on both sides, but any
  other comma makes a string "not a number" (the official `parse_digits` deleted every comma, so
  the list `1,2` equalled `12`).
- `\\boxed 5` (no braces) is read when the text has no `boxed{` at all; the official extractor
  returned nothing for it, which made two train rows (train/algebra/24014, 25040) ungradeable.
- A symbolic comparison is refused when either side contains `%` (the official `parse_expr`
  always failed on a trailing percent sign; percentages are compared by the numeric rules).

Kept on purpose although questionable (parity): interval bracket kinds are not compared
(`(1,2)` equals `[1,2]`), `\\cdot` is deleted by `strip_string` (`2\\cdot3` reads `23`), and a
response must box every distinct value the gold solution boxes (37 train rows box more than one).
Speed-ups that do not change verdicts: plain integers/decimals/fractions skip the LaTeX parser;
for constants the numeric comparison decides without `simplify`; for expressions with symbols a
numeric probe at a fixed point rejects clearly different ones without `simplify`.
"""

from __future__ import annotations

import atexit
import json
import math

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
    latex_to_gate_text,
    serve_grader_worker,
    symbolic_gate_allows,
)
