"""The symbolic check (sympy), which only ever runs inside a grader worker process.

`_SymbolicEngine.equal` is the official `symbolic_equal` (`tasks/math_grader_minerva.py`):

1. each side is rendered to plain text by pylatexenc (the official `_parse_latex`: `\\frac{a}{b}`
   -> `a/b`, `\\pi` -> `pi`, `\\sqrt{2}` -> `sqrt(2)`, unknown macros dropped, `%` starts a
   comment);
2. the official `should_allow_eval` guard refuses text with more than two unknown letters and
   big exponents or factorials;
3. equal when `simplify((a)-(b)) == 0`, the difference read by sympy's parser with implicit
   multiplication (`2pi` is `2*pi`), or when `N(a)` and `N(b)` (read without implicit
   multiplication) are within 1e-3.

DEPARTURE (one of the three documented fixes): sympy's parser is not allowed to `eval` the
text; `vineppo.tasks.math_grading.safe_sympy` gives the same objects with a whitelisted
evaluator. The whole check runs in a worker process under the pool's timeout.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys

from vineppo.tasks.math_grading.compare import NUMERIC_TOLERANCE, _answer_lists_match, _math_equal

#: address-space cap of each worker process (MiB); a runaway big-integer power fails fast
DEFAULT_WORKER_MEMORY_MB = 2048

# --------------------------------------------------------------------------------------------
# The official text rendering and guard (pure string work; the rendering needs pylatexenc)
# --------------------------------------------------------------------------------------------

# Names that the official letter count ignores, removed in the official order (so `arcsin`
# leaves `arc` behind, exactly as there).
_KNOWN_NAMES_IN_COUNT_ORDER = (
    "sqrt", "frac", "pi", "inf", "cos", "sin", "tan", "cot",
    "arccos", "arcsin", "arctan", "arccot", "log", "ln", "exp",
)
# The official BAD_SUBSTRINGS and BAD_REGEXES; the factorial one (`[0-9][0-9][0-9]+!`) is
# anchored at the start of a digit run, which finds the same matches without its quadratic cost.
_EXPLOSIVE_SUBSTRINGS = ("^{", "^(")
_EXPLOSIVE_PATTERNS = tuple(
    re.compile(p)
    for p in (r"\^[0-9]+\^", r"\^-?[0-9][0-9]+", r"\*\*[0-9]+\*\*", r"\*\*-?[0-9][0-9]+", r"(?<![0-9])[0-9]{3,}!")
)
# The official `_parse_latex` replaces these characters of pylatexenc's output.
_TEXT_REPLACEMENTS = (("\u221a", "sqrt"), ("\u03c0", "pi"), ("\u221e", "inf"), ("\u222a", "U"), ("\u00b7", "*"), ("\u00d7", "*"))
# `7 3/4` -> `7+3/4` (the official `_inject_implicit_mixed_number`)
_SPACED_DIGITS = re.compile("([0-9]) +([0-9])")

_latex_converter = None


def latex_to_text(latex: str) -> str:
    """The official `_parse_latex`: pylatexenc's plain-text rendering plus a few replacements."""
    global _latex_converter
    if _latex_converter is None:
        from pylatexenc.latex2text import LatexNodes2Text

        _latex_converter = LatexNodes2Text()
    text = latex.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    text = _latex_converter.latex_to_text(text)
    for character, replacement in _TEXT_REPLACEMENTS:
        text = text.replace(character, replacement)
    return text.strip()


def count_unknown_letters(text: str) -> int:
    """Distinct letters of `text` after removing the function names the official count ignores."""
    for name in _KNOWN_NAMES_IN_COUNT_ORDER:
        text = text.replace(name, "")
    return len({ch for ch in text if ch.isalpha()})


def text_allows_eval(text: str) -> bool:
    """The official `should_allow_eval` on rendered text: refuse words (> 2 unknown letters) and
    towers or big exponents/factorials (`x^{10}`, `1000!`) that could hang sympy."""
    if count_unknown_letters(text) > 2:
        return False
    if any(s in text for s in _EXPLOSIVE_SUBSTRINGS):
        return False
    return not any(p.search(text) for p in _EXPLOSIVE_PATTERNS)


def symbolic_gate_allows(latex: str) -> bool:
    """Whether the official guard lets `latex` (rendered by `latex_to_text`) reach sympy."""
    return text_allows_eval(latex_to_text(latex))


class _SymbolicEngine:
    """The official `symbolic_equal`, built only inside a worker (it loads sympy)."""

    def __init__(self) -> None:
        import sympy

        from vineppo.tasks.math_grading import safe_sympy

        self._sympy = sympy
        self._safe = safe_sympy
        self._texts: dict[str, str | None] = {}

    def _text(self, latex: str) -> str | None:
        if latex not in self._texts:
            try:
                text: str | None = latex_to_text(latex)
            except Exception:
                # DEPARTURE (never seen on real answers): the official code then gave the raw
                # string to parse_expr and the guard crashed on the result; "not equal" here.
                text = None
            if len(self._texts) > 4096:
                self._texts.clear()
            self._texts[latex] = text
        return self._texts[latex]

    def equal(self, a_latex: str, b_latex: str) -> bool:
        a, b = self._text(a_latex), self._text(b_latex)
        if a is None or b is None or not (text_allows_eval(a) and text_allows_eval(b)):
            return False
        difference = _SPACED_DIGITS.sub(r"\1+\2", f"({a})-({b})").replace(" ", "")
        try:
            if self._sympy.simplify(self._safe.parse_like_sympy_parse(difference)) == 0:
                return True
        except Exception:
            pass
        try:
            a_value = self._safe.numeric_value_like_N(a)
            b_value = self._safe.numeric_value_like_N(b)
            return math.isclose(a_value, b_value, abs_tol=NUMERIC_TOLERANCE)
        except Exception:  # complex, symbolic, unparseable
            return False


def math_verify_equal(gold_text: str, predicted_text: str) -> bool:
    """`math_verify` mode: Hugging Face math-verify parses the answer out of both texts (a
    `\\boxed{}`, a final `$...$` or a plain number) and checks them for equality. Worker only."""
    from math_verify import parse, verify

    gold = parse(gold_text)
    predicted = parse(predicted_text)
    if not gold or not predicted:
        return False
    return bool(verify(gold, predicted))


# --------------------------------------------------------------------------------------------
# The worker process
# --------------------------------------------------------------------------------------------

_WARM_UP_PAIRS = (
    ("\\sqrt{x}+\\frac{x}{2}", "\\frac{x}{2}+x^{1/2}"),
    ("\\frac{3\\sqrt{2}}{4}", "\\frac{\\pi}{6}"),
    ("2\\sqrt{5}-1", "-\\frac{7}{2}+3i"),
    ("x^2-4x+3", "(x-1)(x-3)"),
    ("\\dfrac{5}{2}\\pi r^2", "10\\cdot\\sin(\\theta)"),
    ("\\log_2 8", "\\text{odd}"),
)
_WORKER_LAUNCH = (
    "import sys; from vineppo.tasks.math_grading.symbolic import serve_grader_worker; "
    "serve_grader_worker(int(sys.argv[1]))"
)


def _die_with_parent() -> None:
    # Linux: have the kernel SIGKILL this worker if the grading process dies, even mid-simplify.
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except Exception:
        pass


def serve_grader_worker(memory_limit_mb: int = DEFAULT_WORKER_MEMORY_MB) -> None:
    """Worker main loop: JSON requests on stdin, one JSON verdict per line on stdout.

    Requests: `{"id": n, "op": "math_equal", "args": [pred, gold]}`,
    `{"id": n, "op": "answer_lists_match", "args": [preds, golds]}` or
    `{"id": n, "op": "math_verify", "args": [gold_text, predicted_text]}`. Replies:
    `{"id": n, "result": bool}`; any exception counts as False. The first line sent is
    `{"ready": true}` once sympy and the LaTeX parser are loaded, or `{"fatal": "..."}`.
    """
    # Keep the protocol streams private: whatever a library prints cannot corrupt them.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    sys.stdout = sys.stderr

    def reply(message: dict) -> None:
        replies.write(json.dumps(message).encode() + b"\n")
        replies.flush()

    _die_with_parent()
    try:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass
    # sympy's parser and our evaluator recurse once per operator of a long sum; CPython's own
    # compiler (which the official eval used) reads such chains, so allow deep recursion here.
    sys.setrecursionlimit(20_000)
    try:
        engine = _SymbolicEngine()
        # Load simplify's modules and warm the LaTeX parser's prediction cache on common answer
        # shapes now, so that the first timed cases do not pay for it.
        for a, b in _WARM_UP_PAIRS:
            engine.equal(a, b)
    except Exception as error:
        reply({"fatal": f"{type(error).__name__}: {error}"})
        return
    reply({"ready": True})

    for line in requests:
        try:
            request = json.loads(line)
        except ValueError:
            continue
        try:
            first, second = request["args"]
            if request["op"] == "math_equal":
                result = _math_equal(first, second, engine.equal)
            elif request["op"] == "math_verify":
                result = math_verify_equal(first, second)
            else:
                result = _answer_lists_match(first, second, engine.equal)
        except Exception:  # MemoryError and RecursionError included: "not equal"
            result = False
        reply({"id": request.get("id"), "result": bool(result)})

