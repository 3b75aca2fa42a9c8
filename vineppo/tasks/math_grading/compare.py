"""The official `math_equal` / `is_correct` / `eval_math` rules, with the symbolic step injected.

The same comparison logic runs in the caller (with a probe that only notes whether a symbolic
check is needed) and in a grader worker (with the real symbolic check).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

#: absolute tolerance for numeric equality
NUMERIC_TOLERANCE = 1e-3

# A check "are these two LaTeX strings symbolically equal?"
SymbolicCheck = Callable[[str, str], bool]

# --------------------------------------------------------------------------------------------
# Comparison (the official math_equal / is_correct / eval_math), symbolic step injected
# --------------------------------------------------------------------------------------------

_MATRIX_BEGINS = ("\\begin{pmatrix}", "\\begin{bmatrix}")
_MATRIX_ENDS = ("\\end{pmatrix}", "\\end{bmatrix}")


def parse_number(text: str) -> float | None:
    """The official `parse_digits`: every comma removed, then a float (`1e3`, `5,600`, `inf`),
    or a percentage (`25%` or `25\\%` -> 0.25); None otherwise."""
    s = str(text).replace(",", "")
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

