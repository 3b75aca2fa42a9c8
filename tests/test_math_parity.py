"""The official MATH grader's verdicts, family by family (grading.mode: official).

Every expected verdict below was checked against the official code (McGill-NLP/VinePPO,
`tasks/math_answer_exctraction.py` + `tasks/math_grader_minerva.py::eval_math`, pylatexenc 2.10,
sympy); the test itself does not need that code. Each case is (response, gold solution).
"""

from __future__ import annotations

import pytest

from vineppo.tasks.math_grading import GraderPool, is_correct_math


def B(answer: str) -> str:
    return "So the answer is $\\boxed{" + answer + "}$."


FAMILIES = {
    # found through the "he answer is" fallback, rendered by pylatexenc as its contents
    "fbox": [("The answer is \\fbox{p - q}", B("p-q"), True), ("The answer is \\fbox{7}", B("7"), True)],
    # strip_string removes `\mathbf`, leaving `{42}`, which renders as 42
    "mathbf": [(B("\\mathbf{42}"), B("42"), True), ("The answer is $\\mathbf{3}$", B("3"), True)],
    # `pi` without a backslash is sympy's pi
    "pi-word": [(B("\\frac{pi}{2}"), B("\\frac{\\pi}{2}"), True), (B("2pi"), B("2\\pi"), True)],
    # `%` starts a LaTeX comment in pylatexenc's rendering
    "percent": [
        (B("6 - 5i\\%"), B("6-5i"), True),
        ("$\\boxed{\\frac{14}{3}}%$", B("\\frac{14}{3}"), True),
        (B("\\frac{14}{3}\\%"), B("\\frac{14}{3}"), True),
        (B("125\\% dollars"), B("125"), True),
        (B("0.5\\%"), B("0.005"), True),
        (B("25\\%"), B("25"), True),
    ],
    # a whole-string \text{...} is unwrapped; `\mbox{` without its `}` stays and renders away
    "text-mbox": [(B("\\text{(B)}\\mbox{ inches}"), B("\\text{(B)}"), True), (B("4\\mbox{ sq units}"), B("4"), True)],
    # no box in the gold solution: both sides fall back to the last number
    "unboxed": [("So the number is ${52_8}.$", "The number is $52_8$.", True),
                ("We get 12 apples", "In total 12.", True), ("We get 13 apples", "In total 12.", False)],
    # an unbraced box extracts nothing (and there is no fallback since "boxed" occurs)
    "unbraced-box": [("So $\\boxed 90^\\circ$", B("90"), False), ("thus $\\boxed 5$", B("5"), False)],
    # simplify reads `288(3.14159) - 288pi` (implicit multiplication: not 0); the numeric step
    # reads each side without implicit multiplication, where `288pi` and `288(...)` fail
    "approximations": [(B("288 (3.14159)"), B("288\\pi"), False), (B("904.779"), B("288\\pi"), False),
                       (B("3.1416"), B("\\pi"), True), (B("3.14"), B("\\pi"), False)],
    # `\log_2 1024` renders as the symbol `log_21024`
    "logs": [(B("\\log_2 1024"), B("10"), False), (B("\\ln e"), B("1"), False), (B("\\log 100"), B("2"), False)],
    # pylatexenc writes `\frac{a}{b}` as `a/b` without brackets, so grouping is lost
    "fraction-grouping": [
        (B("\\frac{21}{5\\sqrt{21}}"), B("\\frac{\\sqrt{21}}{5}"), False),
        (B("\\dfrac{\\sqrt{5}+1}{2}"), B("\\frac{1+\\sqrt{5}}{2}"), False),
        (B("\\frac{x+1}{2}"), B("\\frac{1+x}{2}"), False),
        (B("\\frac{\\sqrt{2}}{2}"), B("\\frac{1}{\\sqrt{2}}"), True),
        (B("2\\frac{1}{2}"), B("\\frac{5}{2}"), True),
    ],
    # spaces are removed after the degree sign was looked for
    "spaced-digits": [(B("1 2 0 ^ \\circ"), B("120"), False), (B("1 2 0"), B("120"), True)],
    # the guard refuses `^{` and exponents of two or more digits
    "exponents": [(B("5^{1/2}"), B("\\sqrt{5}"), False), (B("2^{10}"), B("1024"), False),
                  (B("e^2"), B("e^{2}"), True), (B("x^2+2x+1"), B("(x+1)^2"), True)],
    # deleted `\cdot`, kept `\times`
    "cdot": [(B("2 \\cdot 3"), B("6"), False), (B("2 \\cdot 3"), B("23"), True), (B("2 \\times 3"), B("6"), True)],
    # parse_digits deletes every comma
    "commas": [(B("1,2"), B("12"), True), (B("5,600"), B("5600"), True), (B("1,000.5"), B("1000.5"), True)],
    # more than two distinct unknown letters: no symbolic check
    "letters": [(B("a+b"), B("b+a"), True), (B("abc"), B("cba"), False), (B("xyz"), B("zyx"), False),
                (B("Odd"), B("odd"), False), (B("\\text{odd}"), B("\\text{odd}"), True)],
    "misc": [
        (B("x \\in [1,2]"), B("[1,2]"), False),
        (B("\\sin 30^\\circ"), B("\\frac{1}{2}"), False),
        (B("10!"), B("3628800"), True),
        (B("\\frac{1}{0}"), B("\\infty"), False),
        (B("i\\sqrt{2}"), B("\\sqrt{-2}"), False),
        (B("\\$5"), B("5"), True),
        (B("5 \\text{ cm}^2"), B("5"), False),
        (B("2+3j"), B("2+3i"), True),
        (B("\\pm 3"), B("3"), False),
        (B("\\sqrt[3]{8}"), B("2"), False),
        (B("3:1"), B("3"), False),
        (B("1/2"), B("0.5"), True),
    ],
}

CASES = [(family, *case) for family, cases in FAMILIES.items() for case in cases]


@pytest.fixture(scope="module")
def pool():
    with GraderPool(num_workers=2, timeout=15.0) as grader_pool:
        yield grader_pool


@pytest.mark.parametrize("family, response, gold_solution, verdict", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_official_verdict(pool, family, response, gold_solution, verdict):
    assert is_correct_math(response, gold_solution, "Find the answer.", pool=pool) is verdict
