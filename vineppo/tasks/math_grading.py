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
import os
import re
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

#: seconds allowed for the symbolic part of one case (the official SympySimplifier timeout)
DEFAULT_TIMEOUT = 15.0
#: absolute tolerance for numeric equality
NUMERIC_TOLERANCE = 1e-3
#: grader worker processes in the default pool
DEFAULT_NUM_WORKERS = 2
#: address-space cap of each worker process (MiB); a runaway big-integer power fails fast
DEFAULT_WORKER_MEMORY_MB = 2048

# A check "are these two LaTeX strings symbolically equal?"; injected so the same comparison
# logic runs in the caller (with a probe that only notes the need) and in the worker (for real).
SymbolicCheck = Callable[[str, str], bool]


# --------------------------------------------------------------------------------------------
# strip_string: the official answer normalisation, step by step
# --------------------------------------------------------------------------------------------

_SQUARE_OR_CUBIC_METRE_UNIT = re.compile(r"\{(c|m)?m\}(\^(2|3))?")
_TRAILING_PM = re.compile(r"p\.m\.$")
_DIGIT_THEN_TRAILING_T = re.compile(r"(\d)\s*t$")
# `(?<!\d)` only skips start positions inside a digit run, which the official pattern could never
# match at before the run start itself; it keeps these substitutions linear on long digit runs.
_ZERO_DECIMALS_BEFORE_NON_DIGIT = re.compile(r"(?<!\d)(\d+)\.0+([^\d])")
_ZERO_DECIMALS_AT_END = re.compile(r"(?<!\d)(\d+)\.0+$")
_SQRT_BARE_ARGUMENT = re.compile(r"\\sqrt(-?[0-9.a-zA-Z]+)")
_SQRT_SPACED_LAST_WORD = re.compile(r"\\sqrt\s+(\w+)$")
_TAN_BARE_ARGUMENT = re.compile(r"\\tan(-?[0-9.a-zA-Z]+)")
_TAN_SPACED_LAST_WORD = re.compile(r"\\tan\s+(\w+)$")


def _drop_trailing_text_unit(s: str) -> str:
    """Drop a trailing `\\text{...}` (a unit such as `\\text{ cm}`), then strip.

    The official code runs `re.sub(r"\\\\text{.*?}$", "", s).strip()`. With no newlines left, that
    pattern matches from the FIRST `\\text{` to the end exactly when the string ends with `}`;
    this is the same rule without the regex's quadratic worst case. The result is kept only when
    it is non-empty (so `\\text{yes}` alone survives).
    """
    start = s.find("\\text{") if s.endswith("}") else -1
    candidate = (s[:start] if start >= 0 else s).strip()
    return candidate if candidate else s


def _drop_mbox_groups(s: str) -> str:
    """Remove every `\\mbox{...}` up to its first `}` (the official non-greedy regex, linear)."""
    pieces: list[str] = []
    pos = 0
    while True:
        start = s.find("\\mbox{", pos)
        if start < 0:
            break
        end = s.find("}", start + len("\\mbox{"))
        if end < 0:
            break  # no `}` after this one, hence none after any later `\mbox{` either
        pieces.append(s[pos:start])
        pos = end + 1
    pieces.append(s[pos:])
    return "".join(pieces)


def _fix_sqrt(s: str) -> str:
    """`\\sqrt2` -> `\\sqrt{2}`, and a spaced last word `\\sqrt x` -> `\\sqrt{x}`."""
    s = _SQRT_BARE_ARGUMENT.sub(r"\\sqrt{\1}", s)
    return _SQRT_SPACED_LAST_WORD.sub(r"\\sqrt{\1}", s)


def _fix_tan(s: str) -> str:
    """`\\tan2` -> `\\tan{2}` (same rules as `_fix_sqrt`)."""
    s = _TAN_BARE_ARGUMENT.sub(r"\\tan{\1}", s)
    return _TAN_SPACED_LAST_WORD.sub(r"\\tan{\1}", s)


def _fix_fracs(s: str) -> str:
    """Brace single-character fraction arguments: `\\frac12` -> `\\frac{1}{2}`, `\\frac1{72}`.

    A `\\frac` followed by fewer than two characters leaves the whole string unchanged.
    """
    parts = s.split("\\frac")
    rebuilt = [parts[0]]
    for part in parts[1:]:
        rebuilt.append("\\frac")
        if part.startswith("{"):
            rebuilt.append(part)
            continue
        if len(part) < 2:
            return s
        numerator, second, rest = part[0], part[1], part[2:]
        if second == "{":
            rebuilt.append("{" + numerator + "}" + second + rest)
        else:
            rebuilt.append("{" + numerator + "}{" + second + "}" + rest)
    return "".join(rebuilt)


def _fix_a_slash_b(s: str) -> str:
    """`3/4` -> `\\frac{3}{4}` when both sides are plain integers (or contain `sqrt`)."""
    pieces = s.split("/")
    if len(pieces) != 2:
        return s
    top, bottom = pieces
    try:
        top_value: int | str = top if "sqrt" in top else int(top)
        bottom_value: int | str = bottom if "sqrt" in bottom else int(bottom)
    except ValueError:  # not an integer, or too many digits for int()
        return s
    if s != f"{top_value}/{bottom_value}":
        return s
    return "\\frac{" + str(top_value) + "}{" + str(bottom_value) + "}"


def strip_string(answer: str) -> str:
    """Normalise one extracted answer the way the official Minerva grader does.

    In order: drop newlines and trailing dots; remove `\\!`; unwrap a whole-string `\\text{...}`;
    `tfrac`/`dfrac`/`cfrac` -> `frac`; remove `\\left`/`\\right`; drop a trailing `\\text{unit}`;
    remove degree signs, `{cm}`/`{m}`(^2/^3) units, a trailing `p.m.` and a trailing `t` after a
    digit; remove `\\$` and `$`; remove `x\\in`; `\\%` -> `%`; ` .5` -> ` 0.5` and `{.5` -> `{0.5`;
    remove `\\cdot`; `infinity`/`inf` -> `\\infty`; remove `\\mathbf`, `\\mathrm` and `\\mbox{...}`;
    `j` -> `i` when there is no `i`; drop zero decimals (`2.00` -> `2`); leading `.` -> `0.`;
    brace `\\sqrt2`/`\\tan2`; remove spaces; brace `\\frac12`; `a/b` -> `\\frac{a}{b}`; finally
    strip trailing backslashes, commas and dots.
    """
    s = str(answer).strip()
    s = s.replace("\n", "")
    s = s.rstrip(".")
    s = s.replace("\\!", "")
    if s.startswith("\\text{") and s.endswith("}"):
        s = s[len("\\text{"):-1]
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("cfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = _drop_trailing_text_unit(s)
    s = s.replace("^{\\circ}", "").strip()
    s = s.replace("^\\circ", "").strip()
    s = _SQUARE_OR_CUBIC_METRE_UNIT.sub("", s).strip()
    s = _TRAILING_PM.sub("", s).strip()
    s = _DIGIT_THEN_TRAILING_T.sub(r"\1", s).strip()
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("x\\in", "")
    s = s.replace("\\%", "%")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    s = s.replace("\\cdot", "")
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty")
    s = s.replace("\\mathbf", "").replace("\\mathrm", "")
    s = _drop_mbox_groups(s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = _ZERO_DECIMALS_BEFORE_NON_DIGIT.sub(r"\1\2", s)
    s = _ZERO_DECIMALS_AT_END.sub(r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    s = _fix_sqrt(s)
    s = _fix_tan(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    s = _fix_a_slash_b(s)
    return s.rstrip("\\,.")


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

_MINERVA_PREFIX = "final answer is $"
_MINERVA_SUFFIX = "$. I hope"
_ANSWER_IS = "he answer is"
_PROGRAM_OUTPUT_FENCE = "```output"
_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")
_SPACED_BOXED = re.compile(r"\\boxed\s+([^\s$]+)")
_TEXT_AND = re.compile(r"\\text\{\s*and\s*\}")
_COMMA_LIST_PHRASE = "separated by commas"


def extract_boxed_answers(text: str) -> list[str]:
    """Contents of every `boxed{...}`, brace-matched, in order of appearance.

    As in the official code, each box is searched only up to the next `boxed{` (so for nested
    boxes only the innermost is read), an unclosed box gives nothing, and a box closed by `}%`
    keeps its closing brace. DEPARTURE: when the text has no `boxed{` at all, the unbraced form
    `\\boxed 5` gives the token after it (the official code gave nothing).
    """
    pieces = text.split("boxed{")
    if len(pieces) == 1:
        return _SPACED_BOXED.findall(text)
    answers: list[str] = []
    for piece in pieces[1:]:
        depth = 0
        for i, ch in enumerate(piece):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth < 0:
                    closed_by_percent = i + 1 < len(piece) and piece[i + 1] == "%"
                    answers.append(piece[: i + 1] if closed_by_percent else piece[:i])
                    break
    return answers


def extract_program_output(text: str) -> str:
    """The stripped contents of the last ```` ```output ```` block, or "" if there is none."""
    if _PROGRAM_OUTPUT_FENCE not in text:
        return ""
    tail = text.split(_PROGRAM_OUTPUT_FENCE)[-1]
    return tail.split("```")[0].strip()


def extract_last_number(text: str) -> str:
    """The last number in `text` once commas are removed (`1,234.5` reads as `1234.5`), or ""."""
    numbers = _LAST_NUMBER.findall(text.replace(",", ""))
    return numbers[-1] if numbers else ""


def extract_raw_answers(text: str) -> list[str]:
    """The un-normalised answer candidates of `text`, by the official priority order.

    1. `final answer is $...$. I hope` (Minerva format);
    2. else, if "boxed" occurs, every box (possibly none: there is no fallback after this);
    3. else the text after the last `he answer is`;
    4. else the last ```` ```output ```` block;
    5. else the last number.
    """
    if _MINERVA_PREFIX in text and _MINERVA_SUFFIX in text:
        after = text.split(_MINERVA_PREFIX, 1)[1]
        return [after.split(_MINERVA_SUFFIX, 1)[0].strip()]
    if "boxed" in text:
        return extract_boxed_answers(text)
    if _ANSWER_IS in text:
        return [text.split(_ANSWER_IS)[-1].strip()]
    program_output = extract_program_output(text)
    if program_output:
        return [program_output]
    last_number = extract_last_number(text)
    return [last_number] if last_number else []


def clean_extracted_answer(raw: str) -> str:
    """First line only, without leading `:` and trailing `.` or `/`, then `strip_string`."""
    first_line = raw.strip().split("\n")[0]
    return strip_string(first_line.lstrip(":").rstrip(".").rstrip("/"))


def extract_math_answer(response: str, question: str | None = None) -> list[str]:
    """All normalised final answers in `response`, as a list (empty when there is none).

    A list, because MATH answers can be several values: every box counts, a question that asks
    for values "separated by commas" splits a comma list (unless it has brackets, i.e. is a
    tuple or interval), and `\\text{ and }` splits too. Grading the same routine on the gold
    solution gives the gold list (spec §3).
    """
    asks_for_comma_list = question is not None and _COMMA_LIST_PHRASE in question
    answers: list[str] = []
    for raw in extract_raw_answers(response):
        answer = clean_extracted_answer(raw)
        if asks_for_comma_list and not any(ch in answer for ch in "()[]"):
            answers.extend(part.strip() for part in answer.split(","))
        elif _TEXT_AND.search(answer):
            answers.extend(part.strip() for part in _TEXT_AND.split(answer))
        else:
            answers.append(answer.strip())
    return answers


# --------------------------------------------------------------------------------------------
# Comparison (the official math_equal / is_correct / eval_math), symbolic step injected
# --------------------------------------------------------------------------------------------

_THOUSANDS_GROUPED = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_MATRIX_BEGINS = ("\\begin{pmatrix}", "\\begin{bmatrix}")
_MATRIX_ENDS = ("\\end{pmatrix}", "\\end{bmatrix}")


def parse_number(text: str) -> float | None:
    """The value of a plain number (`-3.5`, `1e3`, `5,600`) or a percentage (`25%` -> 0.25).

    DEPARTURE: commas are removed only when they group thousands, on either side (the official
    code removed every comma, so `1,2` read as 12).
    """
    s = str(text)
    if "," in s:
        core = s[:-1].rstrip("\\") if s.endswith("%") else s
        if not _THOUSANDS_GROUPED.fullmatch(core.strip()):
            return None
        s = s.replace(",", "")
    try:
        return float(s)
    except ValueError:
        pass
    if s.endswith("%"):
        s = s[:-1]
        if s.endswith("\\"):
            s = s[:-1]
        try:
            return float(s) / 100
        except ValueError:
            return None
    return None


def numbers_match(pred: float, gold: float, allow_percentage: bool = True) -> bool:
    """`pred` within 1e-3 of gold, or (percentage variants) of gold/100 or gold*100."""
    candidates = (gold / 100, gold, gold * 100) if allow_percentage else (gold,)
    return any(math.isclose(c, pred, abs_tol=NUMERIC_TOLERANCE) for c in candidates)


def _looks_bracketed(s: str) -> bool:
    # The official `regex.match(r"(\(|\[).+(\)|\])", s)`: opens with ( or [, and a ) or ] occurs
    # from the third character on. Brackets of the two sides need not be of the same kind.
    return len(s) >= 3 and s[0] in "([" and (")" in s[2:] or "]" in s[2:])


def _is_matrix(s: str) -> bool:
    return s.startswith(_MATRIX_BEGINS) and s.endswith(_MATRIX_ENDS)


def _matrix_rows(s: str) -> list[str]:
    body = s[len("\\begin{pmatrix}"): -len("\\end{pmatrix}")]  # bmatrix has the same lengths
    return [row.strip() for row in body.split("\\\\") if row.strip()]


def _matrices_equal(pred: str, gold: str, symbolic: SymbolicCheck) -> bool:
    pred_rows, gold_rows = _matrix_rows(pred), _matrix_rows(gold)
    if len(pred_rows) != len(gold_rows):
        return False
    for pred_row, gold_row in zip(pred_rows, gold_rows):
        pred_cells, gold_cells = pred_row.split("&"), gold_row.split("&")
        if len(pred_cells) != len(gold_cells):
            return False
        if not all(_math_equal(p, g, symbolic) for p, g in zip(pred_cells, gold_cells)):
            return False
    return True


def _math_equal(pred: str, gold: str, symbolic: SymbolicCheck) -> bool:
    """The official `math_equal` rules, with the symbolic step delegated to `symbolic`."""
    if pred == gold:
        return True

    pred_number, gold_number = parse_number(pred), parse_number(gold)
    if pred_number is not None and gold_number is not None:
        return numbers_match(pred_number, gold_number)

    if not pred:
        return False
    pred, gold = pred.strip(), gold.strip()

    # Tuples and intervals, element by element (the bracket kinds are not compared).
    if _looks_bracketed(pred) and _looks_bracketed(gold):
        pred_parts, gold_parts = pred[1:-1].split(","), gold[1:-1].split(",")
        if len(pred_parts) == len(gold_parts) and all(
            _math_equal(p, g, symbolic) for p, g in zip(pred_parts, gold_parts)
        ):
            return True

    if _is_matrix(pred) and _is_matrix(gold) and _matrices_equal(pred, gold, symbolic):
        return True

    # Equations: compare `lhs - (rhs)` up to sign, or drop a short `x =` on one side.
    if pred.count("=") == 1 and gold.count("=") == 1:
        pred_lhs, pred_rhs = pred.split("=")
        gold_lhs, gold_rhs = gold.split("=")
        pred_difference = f"{pred_lhs.strip()} - ({pred_rhs.strip()})"
        gold_difference = f"{gold_lhs.strip()} - ({gold_rhs.strip()})"
        if symbolic(pred_difference, gold_difference) or symbolic(f"-({pred_difference})", gold_difference):
            return True
    elif pred.count("=") == 1 and len(pred.split("=")[0].strip()) <= 2 and "=" not in gold:
        if _math_equal(pred.split("=")[1], gold, symbolic):
            return True
    elif gold.count("=") == 1 and len(gold.split("=")[0].strip()) <= 2 and "=" not in pred:
        if _math_equal(pred, gold.split("=")[1], symbolic):
            return True

    return symbolic(pred, gold)


def _single_answer_matches(pred: str, gold: str, symbolic: SymbolicCheck) -> bool:
    """The official `is_correct` on two strings: unions piece by piece, else `math_equal`."""
    if "\\cup" in pred and "\\cup" in gold:
        return _all_matched(pred.split("\\cup"), gold.split("\\cup"), symbolic)
    # (The official code first tries float equality within 1e-3; `math_equal` covers it.)
    return (gold != "" and pred == gold) or _math_equal(pred, gold, symbolic)


def _all_matched(preds: Sequence[str], golds: Sequence[str], symbolic: SymbolicCheck) -> bool:
    """Every prediction matches some gold answer and every gold answer some prediction."""
    pred_matched = [False] * len(preds)
    gold_matched = [False] * len(golds)
    for i, pred in enumerate(preds):
        for j, gold in enumerate(golds):
            if pred_matched[i] and gold_matched[j]:
                continue  # this pair can no longer change the outcome
            if _single_answer_matches(pred, gold, symbolic):
                pred_matched[i] = gold_matched[j] = True
        if not pred_matched[i]:
            return False
    return all(gold_matched)


def _answer_lists_match(preds: Sequence[str], golds: Sequence[str], symbolic: SymbolicCheck) -> bool:
    """The official `eval_math` on two answer lists."""
    golds = list(dict.fromkeys(golds))
    preds = list(dict.fromkeys(preds))
    if golds:
        # Only the last len(gold) predictions count (models sometimes box intermediate values).
        preds = preds[-len(golds):]
    return _all_matched(preds, golds, symbolic)


class _SymbolicProbe:
    """A stand-in symbolic check for the calling process: answers False, notes it was asked.

    Every use of the symbolic result in the comparison rules is monotone (a True can only turn
    the verdict to True), so a verdict of True under the probe is final, and so is a False when
    the probe was never asked. Only the remaining cases need a worker.
    """

    def __init__(self) -> None:
        self.asked = False

    def __call__(self, a: str, b: str) -> bool:
        self.asked = True
        return False


def _decide_without_symbolic(compare: Callable[[SymbolicCheck], bool]) -> bool | None:
    """The verdict of `compare` if it needs no symbolic check, else None."""
    probe = _SymbolicProbe()
    try:
        verdict = compare(probe)
    except RecursionError:  # absurdly nested brackets: no sane answer looks like that
        return False
    if verdict or not probe.asked:
        return verdict
    return None


# --------------------------------------------------------------------------------------------
# The symbolic check (runs inside a worker process only)
# --------------------------------------------------------------------------------------------

_GATE_TOKEN = re.compile(r"\\(?:begin|end)\{[^{}]*\}|\\([a-zA-Z]+)|\\(.)|(\}\{)|[{}]", re.DOTALL)
# The function macros pylatexenc 2.10 (the official pin) writes out; it drops other unknown
# macros such as `\sec`, `\cot` or `\gcd` (their arguments stay).
_FUNCTION_NAMES_RENDERED_AS_IS = frozenset(
    "sin cos tan arcsin arccos arctan sinh cosh tanh arcsinh arccosh arctanh ln log exp max min sup inf lim".split()
)
_GREEK_LETTERS = {
    "alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ϵ", "varepsilon": "ε",
    "zeta": "ζ", "eta": "η", "theta": "θ", "vartheta": "ϑ", "iota": "ι", "kappa": "κ",
    "lambda": "λ", "mu": "μ", "nu": "ν", "xi": "ξ", "rho": "ρ", "varrho": "ϱ", "sigma": "σ",
    "varsigma": "ς", "tau": "τ", "upsilon": "υ", "phi": "ϕ", "varphi": "φ", "chi": "χ",
    "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ", "Lambda": "Λ",
    "Xi": "Ξ", "Pi": "Π", "Sigma": "Σ", "Upsilon": "Υ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω",
    "ell": "ℓ", "hbar": "ħ",
}
_COMMANDS_RENDERED_AS = {"pi": "pi", "infty": "inf", "sqrt": "sqrt", "cup": "U", "cdot": "*", "times": "*"}
_ESCAPED_CHARACTERS_KEPT = frozenset("{}%$&#_")
# Names that the official letter count ignores, removed in the official order (so `arcsin`
# leaves `arc` behind, exactly as there).
_KNOWN_NAMES_IN_COUNT_ORDER = (
    "sqrt", "frac", "pi", "inf", "cos", "sin", "tan", "cot",
    "arccos", "arcsin", "arctan", "arccot", "log", "ln", "exp",
)
# The official BAD_REGEXES; the factorial one (`[0-9][0-9][0-9]+!`) is anchored at the start of
# a digit run, which finds the same matches without its quadratic cost on long digit runs.
_EXPLOSIVE_PATTERNS = tuple(
    re.compile(p)
    for p in (r"\^[0-9]+\^", r"\^-?[0-9][0-9]+", r"\*\*[0-9]+\*\*", r"\*\*-?[0-9][0-9]+", r"(?<![0-9])[0-9]{3,}!")
)


def _render_gate_token(match: re.Match[str]) -> str:
    command, escaped = match.group(1), match.group(2)
    if command is not None:
        if command in _FUNCTION_NAMES_RENDERED_AS_IS:
            return command
        if command in _COMMANDS_RENDERED_AS:
            return _COMMANDS_RENDERED_AS[command]
        return _GREEK_LETTERS.get(command, "")
    if escaped is not None:
        return escaped if escaped in _ESCAPED_CHARACTERS_KEPT else " "
    if match.group(3) is not None:
        return "/"  # between two groups, as in `\frac{a}{b}` -> `a/b`
    return ""  # a grouping brace, or an environment's \begin{...}/\end{...}


def latex_to_gate_text(latex: str) -> str:
    """A plain-text rendering of `latex` close enough to pylatexenc's for the symbolic gate.

    Grouping braces and formatting commands vanish (`x^{10}` -> `x^10`, `\\text{ab}` -> `ab`),
    `\\frac{a}{b}` -> `a/b`, Greek letters become Unicode letters, function names stay,
    `\\pi` -> `pi`, `\\infty` -> `inf`.
    """
    return _GATE_TOKEN.sub(_render_gate_token, latex)


def count_unknown_letters(text: str) -> int:
    """Distinct letters of `text` after removing the function names the official count ignores."""
    for name in _KNOWN_NAMES_IN_COUNT_ORDER:
        text = text.replace(name, "")
    return len({ch for ch in text if ch.isalpha()})


def symbolic_gate_allows(latex: str) -> bool:
    """The official `should_allow_eval` guard: refuse words (> 2 unknown letters) and towers or
    big exponents/factorials (`10^{10^{10}}`, `x^{10}`, `1000!`) that could hang sympy.

    DEPARTURE: also refuses anything containing `%` (see the module docstring).
    """
    if "%" in latex:
        return False
    text = latex_to_gate_text(latex)
    if count_unknown_letters(text) > 2:
        return False
    if "^{" in text or "^(" in text:
        return False
    return not any(p.search(text) for p in _EXPLOSIVE_PATTERNS)


# Text wrappers that pylatexenc rendered as their contents (`\text{odd}` reads as `odd`).
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathit|mbox)\{([^{}]*)\}")
# A dot closing a number (`30.`), which Python's parser accepted and the LaTeX grammar does not.
_DIGIT_THEN_BARE_DOT = re.compile(r"(\d)\.(?!\d)")
_PLAIN_INTEGER = re.compile(r"-?\d+")
_PLAIN_DECIMAL = re.compile(r"-?(?:\d+\.\d*|\.\d+)")
_PLAIN_FRACTION = re.compile(r"(-?)\\frac\{(\d+)\}\{(\d+)\}")
# Values given to free symbols when probing whether a difference is identically zero: positive,
# distinct, not integers, below 2 (so towers and logs stay finite and real).
_PROBE_VALUES = tuple(0.5772156649 + 0.2710000000 * k for k in range(6))
_PROBE_RELATIVE_TOLERANCE = 1e-6


class _SymbolicEngine:
    """LaTeX parsing + simplify + N, with a parse cache. Only ever built inside a worker."""

    def __init__(self) -> None:
        import sympy
        from latex2sympy2_extended import NormalizationConfig, latex2sympy
        from latex2sympy2_extended.latex2sympy2 import ConversionConfig

        self._sympy = sympy
        self._latex2sympy = latex2sympy
        # Answers are already strip_string-normalised: only the parser's basic clean-up, plus its
        # repair of unbraced operator arguments (`\frac{\sqrt{6}}2`), which pylatexenc also read.
        self._normalization = NormalizationConfig(
            basic_latex=True, units=False, malformed_operators=True, nits=False, boxed="none", equations=False
        )
        # Case-sensitive symbols, as sympy's parse_expr in the official code (`C` != `c`); a
        # number followed by a fraction is a mixed number, as the official text rewriting made it.
        self._conversion = ConversionConfig(lowercase_symbols=False, interpret_as_mixed_fractions=True)
        self._parsed: dict[str, object] = {}

    def _parse_plain_number(self, latex: str) -> object | None:
        # The commonest answers, built directly: the same objects latex2sympy would build, minus
        # the cost of its (pure-Python ANTLR) parser.
        sympy = self._sympy
        if _PLAIN_INTEGER.fullmatch(latex):
            return sympy.Integer(int(latex)) if len(latex) < 1000 else None
        if _PLAIN_DECIMAL.fullmatch(latex) and len(latex) < 100:
            return sympy.Float(latex)
        fraction = _PLAIN_FRACTION.fullmatch(latex)
        if fraction and len(latex) < 100:
            sign, numerator, denominator = fraction.groups()
            value = sympy.Rational(int(numerator), int(denominator)) if int(denominator) else sympy.zoo
            return -value if sign else value
        return None

    def parse(self, latex: str) -> object | None:
        """A sympy expression for `latex`, or None when it does not parse to a plain expression
        (sets, intervals, relations, matrices and parse errors are all None)."""
        if latex not in self._parsed:
            expression = self._parse_plain_number(latex)
            if expression is None:
                prepared = _DIGIT_THEN_BARE_DOT.sub(r"\1", _TEXT_WRAPPER.sub(r"\1", latex))
                try:
                    expression = self._latex2sympy(
                        prepared, normalization_config=self._normalization, conversion_config=self._conversion
                    )
                except Exception:
                    expression = None
            if not isinstance(expression, self._sympy.Expr):
                expression = None
            if len(self._parsed) > 4096:
                self._parsed.clear()
            self._parsed[latex] = expression
        return self._parsed[latex]

    def _real_value(self, expression: object, substitutions: dict | None = None) -> float | None:
        """The value of `expression` as a finite real float, or None (symbolic, complex, infinite)."""
        value = self._sympy.N(expression, subs=substitutions) if substitutions else self._sympy.N(expression)
        if not (value.is_number and value.is_real and value.is_finite):
            return None
        return float(value)

    def _differ_at_probe_point(self, a: object, b: object, symbols: Iterable[object]) -> bool:
        """Whether a and b, given fixed real values for their symbols, have clearly different
        real values: then a - b is not identically zero and simplify cannot reduce it to 0."""
        ordered = sorted(symbols, key=str)
        if len(ordered) > len(_PROBE_VALUES):
            return False
        point = dict(zip(ordered, _PROBE_VALUES))
        a_value, b_value = self._real_value(a, point), self._real_value(b, point)
        if a_value is None or b_value is None:
            return False
        scale = max(1.0, abs(a_value), abs(b_value))
        return abs(a_value - b_value) > _PROBE_RELATIVE_TOLERANCE * scale

    def equal(self, a_latex: str, b_latex: str) -> bool:
        """The official `symbolic_equal`: simplify(a - b) == 0, or N(a) within 1e-3 of N(b).

        DEPARTURE: a and b come from the LaTeX grammar, not from `parse_expr` on pylatexenc text
        (see the module docstring).
        """
        if not (symbolic_gate_allows(a_latex) and symbolic_gate_allows(b_latex)):
            return False
        if any(mark in text for text in (a_latex, b_latex) for mark in ",:"):
            # The official code parsed text with a comma as a Python tuple, which can be neither
            # subtracted nor evaluated numerically, and text with a colon (ratios, times) not at
            # all: never equal. (The LaTeX grammar would read `3:1` as 3.) Skipping saves time.
            return False
        a, b = self.parse(a_latex), self.parse(b_latex)
        if a is None or b is None:
            return False
        sympy = self._sympy
        try:
            symbols = a.free_symbols | b.free_symbols
            if not symbols:
                # Real constants: simplify(a - b) == 0 implies |N(a) - N(b)| <= 1e-3, so the
                # verdict is the numeric comparison alone; simplify is skipped (it is the slow part).
                a_value, b_value = self._real_value(a), self._real_value(b)
                if a_value is not None and b_value is not None:
                    return math.isclose(a_value, b_value, abs_tol=NUMERIC_TOLERANCE)
            elif self._differ_at_probe_point(a, b, symbols):
                # Not identically equal, and the numeric step cannot match symbolic values.
                return False
        except Exception:
            pass  # fall back to the full check below
        try:
            if sympy.simplify(a - b) == 0:
                return True
        except Exception:
            pass
        try:
            return math.isclose(float(sympy.N(a)), float(sympy.N(b)), abs_tol=NUMERIC_TOLERANCE)
        except Exception:  # complex, symbolic or undefined values
            return False


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
    "import sys; from vineppo.tasks.math_grading import serve_grader_worker; "
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

    Requests: `{"id": n, "op": "math_equal", "args": [pred, gold]}` or
    `{"id": n, "op": "answer_lists_match", "args": [preds, golds]}`. Replies:
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
            else:
                result = _answer_lists_match(first, second, engine.equal)
        except Exception:  # MemoryError and RecursionError included: "not equal"
            result = False
        reply({"id": request.get("id"), "result": bool(result)})


# --------------------------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------------------------

# How long a fresh worker may take to import sympy and report ready.
_WORKER_START_TIMEOUT = 120.0
# Consecutive workers dying before ready after which the pool gives up (a broken install).
_MAX_FAILED_STARTS = 3


@dataclass
class _Job:
    index: int
    op: str
    args: tuple
    deadline: float = 0.0


class _Worker:
    """One grader subprocess and its protocol state."""

    def __init__(self, memory_limit_mb: int, stderr_to_devnull: bool) -> None:
        self.memory_limit_mb = memory_limit_mb
        self.stderr_to_devnull = stderr_to_devnull
        self.process: subprocess.Popen | None = None
        self.buffer = b""
        self.ready = False
        self.job: _Job | None = None
        self.start_deadline = 0.0

    def start(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_LAUNCH, str(self.memory_limit_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if self.stderr_to_devnull else None,
            env=env,
            close_fds=True,
            start_new_session=True,  # Ctrl-C goes to the grading process, which closes the pool
        )
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self.buffer = b""
        self.ready = False
        self.job = None
        self.start_deadline = time.monotonic() + _WORKER_START_TIMEOUT

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is None:
            return
        try:
            self.process.kill()
        except OSError:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass
        self.process = None
        self.ready = False
        self.job = None

    def send(self, job: _Job) -> bool:
        """Hand `job` to this (ready, idle) worker; False if the worker turned out to be dead."""
        assert self.process is not None and self.process.stdin is not None
        line = json.dumps({"id": job.index, "op": job.op, "args": list(job.args)}).encode() + b"\n"
        try:
            self.process.stdin.write(line)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        self.job = job
        return True

    def read_messages(self) -> tuple[list[dict], bool]:
        """Complete messages now available, and whether the worker's output has ended."""
        assert self.process is not None and self.process.stdout is not None
        ended = False
        while True:
            try:
                chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                ended = True
                break
            if not chunk:
                ended = True
                break
            self.buffer += chunk
        messages = []
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue
        return messages, ended


class GraderPool:
    """Sandboxed MATH grading in worker processes, each case under a hard timeout.

    Cases that string or numeric rules decide are answered in the calling process; only the rest
    (those needing the symbolic check) go to the workers, `num_workers` at a time. A worker that
    exceeds the timeout is killed and replaced, a worker that crashes is replaced; either way that
    case is graded "not equal" and the pool keeps serving. Use as a context manager, or call
    `close()`; `default_grader_pool()` gives a shared pool that is closed at interpreter exit.
    """

    def __init__(
        self,
        num_workers: int = DEFAULT_NUM_WORKERS,
        timeout: float = DEFAULT_TIMEOUT,
        memory_limit_mb: int = DEFAULT_WORKER_MEMORY_MB,
        quiet_workers: bool = True,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.num_workers = num_workers
        self.timeout = float(timeout)
        self.memory_limit_mb = memory_limit_mb
        self.quiet_workers = quiet_workers
        self._workers: list[_Worker] = []
        self._owner_pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False
        #: cases answered by a worker / killed at the timeout / lost to a worker crash
        self.stats = {"worker_cases": 0, "timeouts": 0, "crashes": 0}

    # -- public API --------------------------------------------------------------------------

    def math_equal(self, pred: str, gold: str, timeout: float | None = None) -> bool:
        """`math_equal` for one pair of normalised answers."""
        decided = _decide_without_symbolic(lambda symbolic: _math_equal(pred, gold, symbolic))
        if decided is not None:
            return decided
        return self._run([_Job(0, "math_equal", (pred, gold))], timeout)[0]

    def answer_lists_match(self, preds: Sequence[str], golds: Sequence[str], timeout: float | None = None) -> bool:
        """`eval_math` for one pair of extracted answer lists."""
        return self.grade_answer_lists([(preds, golds)], timeout)[0]

    def grade_answer_lists(
        self, cases: Iterable[tuple[Sequence[str], Sequence[str]]], timeout: float | None = None
    ) -> list[bool]:
        """`eval_math` for many (predicted answers, gold answers) pairs, in parallel."""
        verdicts: list[bool] = []
        jobs: list[_Job] = []
        for index, (preds, golds) in enumerate(cases):
            preds, golds = [str(p) for p in preds], [str(g) for g in golds]
            decided = _decide_without_symbolic(
                lambda symbolic, p=preds, g=golds: _answer_lists_match(p, g, symbolic)
            )
            verdicts.append(bool(decided))
            if decided is None:
                jobs.append(_Job(index, "answer_lists_match", (preds, golds)))
        if jobs:
            for job, verdict in zip(jobs, self._run(jobs, timeout)):
                verdicts[job.index] = verdict
        return verdicts

    def grade_many(
        self, cases: Iterable[tuple[str, str, str | None]], timeout: float | None = None
    ) -> list[bool]:
        """Grade (response, gold solution, question) triples; see `is_correct_math`."""
        pairs = [
            (extract_math_answer(response, question), extract_math_answer(gold_solution, question))
            for response, gold_solution, question in cases
        ]
        return self.grade_answer_lists(pairs, timeout)

    def start(self) -> None:
        """Start the workers now and wait until they are ready (otherwise they start on first
        use). Also replaces workers still restarting after a timeout or a crash."""
        self._run([], None, until_all_ready=True)

    def close(self) -> None:
        """Stop every worker. The pool cannot be used afterwards."""
        with self._lock:
            self._closed = True
            if os.getpid() == self._owner_pid:
                for worker in self._workers:
                    worker.kill()
            self._workers = []

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- scheduling --------------------------------------------------------------------------

    def _ensure_workers(self) -> None:
        if os.getpid() != self._owner_pid:
            # A forked copy of the pool: the workers belong to the parent; start our own.
            self._workers = []
            self._owner_pid = os.getpid()
        while len(self._workers) < self.num_workers:
            self._workers.append(_Worker(self.memory_limit_mb, self.quiet_workers))
        for worker in self._workers:
            if not worker.alive:
                worker.kill()
                worker.start()

    def _run(self, jobs: list[_Job], timeout: float | None, until_all_ready: bool = False) -> list[bool]:
        """Run `jobs` on the workers; verdict False for any job that times out or crashes.

        DEPARTURE: the timeout covers a whole job (all symbolic checks of one case); the official
        code timed each `simplify` separately and left `N` untimed.
        """
        limit = self.timeout if timeout is None else float(timeout)
        if limit <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        with self._lock:
            if self._closed:
                raise RuntimeError("GraderPool is closed")
            self._ensure_workers()
            try:
                return self._schedule(jobs, limit, until_all_ready)
            except BaseException:
                # Interrupted or failed mid-batch: drop every worker so no stale job survives.
                for worker in self._workers:
                    worker.kill()
                raise

    def _schedule(self, jobs: list[_Job], limit: float, until_all_ready: bool = False) -> list[bool]:
        results: dict[int, bool] = {}
        pending = deque(range(len(jobs)))
        failed_starts = 0
        while (
            pending
            or any(w.job is not None for w in self._workers)
            or (until_all_ready and not all(w.ready for w in self._workers))
        ):
            now = time.monotonic()
            for worker in self._workers:
                if worker.ready and worker.job is None and pending and not worker.alive:
                    worker.kill()  # died while idle: replace it before it loses a case
                    worker.start()
                if worker.ready and worker.job is None and pending:
                    position = pending.popleft()
                    job = jobs[position]
                    if worker.send(_Job(position, job.op, job.args, deadline=now + limit)):
                        continue
                    pending.appendleft(position)  # never started: it goes to the next worker
                    worker.kill()
                    worker.start()

            busy = [w for w in self._workers if w.job is not None]
            starting = [w for w in self._workers if not w.ready]
            deadlines = [w.job.deadline for w in busy] + [w.start_deadline for w in starting]
            wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 0.0
            with selectors.DefaultSelector() as selector:
                for worker in busy + starting:
                    assert worker.process is not None and worker.process.stdout is not None
                    selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
                events = selector.select(timeout=wait)

            for key, _ in events:
                worker = key.data
                messages, ended = worker.read_messages()
                for message in messages:
                    if message.get("ready"):
                        worker.ready = True
                        failed_starts = 0
                    elif "fatal" in message:
                        raise RuntimeError(f"MATH grader worker could not start: {message['fatal']}")
                    elif worker.job is not None and message.get("id") == worker.job.index:
                        results[worker.job.index] = bool(message.get("result"))
                        self.stats["worker_cases"] += 1
                        worker.job = None
                if ended:
                    if worker.job is not None:
                        results[worker.job.index] = False
                        self.stats["crashes"] += 1
                    elif not worker.ready:
                        failed_starts += 1
                        if failed_starts >= _MAX_FAILED_STARTS:
                            raise RuntimeError(
                                "MATH grader workers exit before they are ready; run "
                                f"`{sys.executable} -c \"{_WORKER_LAUNCH}\" 2048` to see why"
                            )
                    worker.kill()
                    worker.start()

            now = time.monotonic()
            for worker in self._workers:
                if worker.job is not None and now >= worker.job.deadline:
                    results[worker.job.index] = False
                    self.stats["timeouts"] += 1
                    worker.kill()
                    worker.start()
                elif not worker.ready and now >= worker.start_deadline:
                    raise RuntimeError(f"a MATH grader worker did not start within {_WORKER_START_TIMEOUT:.0f} s")
        return [results.get(position, False) for position in range(len(jobs))]


_default_pool: GraderPool | None = None
_default_pool_lock = threading.Lock()


def default_grader_pool() -> GraderPool:
    """The shared pool (2 workers, 15 s), created on first use and closed at interpreter exit."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = GraderPool()
        return _default_pool


def shutdown_default_grader_pool() -> None:
    """Stop the shared pool's workers (a later use starts a new pool)."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is not None:
            _default_pool.close()
            _default_pool = None


atexit.register(shutdown_default_grader_pool)


# --------------------------------------------------------------------------------------------
# Module-level entry points
# --------------------------------------------------------------------------------------------


def math_equal(pred: str, gold: str, timeout: float = DEFAULT_TIMEOUT, pool: GraderPool | None = None) -> bool:
    """Whether two normalised answers are equal under the official `math_equal` rules.

    String and numeric checks run here; the symbolic check runs in `pool` (default: the shared
    pool) under `timeout` seconds, and a timeout or worker crash counts as not equal.
    """
    return (pool or default_grader_pool()).math_equal(pred, gold, timeout)


def answer_lists_match(
    preds: Sequence[str], golds: Sequence[str], timeout: float = DEFAULT_TIMEOUT, pool: GraderPool | None = None
) -> bool:
    """The official `eval_math`: the predicted answer list (last `len(golds)` distinct ones)
    and the gold answer list match element-wise as sets."""
    return (pool or default_grader_pool()).answer_lists_match(preds, golds, timeout)


def is_correct_math(
    response: str,
    gold_solution: str,
    question: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    pool: GraderPool | None = None,
) -> bool:
    """Whether `response` reaches the answer of `gold_solution` (both extracted the same way).

    `question` matters for questions asking for values "separated by commas".
    """
    if not isinstance(response, str) or not isinstance(gold_solution, str):
        return False
    return (pool or default_grader_pool()).grade_many([(response, gold_solution, question)], timeout)[0]
