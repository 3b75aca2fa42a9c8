"""Hostile model text against the MATH grader, in both grading modes (official and math_verify):
nothing runs, nothing hangs, the pool survives.

Every grading here must come back within the timeout plus a small margin (worker restarts and a
loaded 2-core machine), and afterwards the pool must still grade ordinary answers correctly.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from vineppo.tasks.math import MathTask
from vineppo.tasks.math_grading import GraderPool, _SymbolicEngine, extract_math_answer, is_correct_math, latex_to_text
from vineppo.tasks.math_grading import safe_sympy

TIMEOUT = 2.0
# generous: these tests catch hangs (unbounded), not slowness; CI machines are shared and noisy
MARGIN = 20.0
# 10 nested powers of 9: a ~10^9-digit integer if anything tried to evaluate it.
POWER_TOWER = "((((((((((9^9)^9)^9)^9)^9)^9)^9)^9)^9)^9)"
NESTED_BRACES = "{" * 10_000 + "1" + "}" * 10_000
ONE_MEGABYTE_SUM = "1+" * 500_000 + "1"


@pytest.fixture(scope="module")
def pool():
    with GraderPool(num_workers=2, timeout=TIMEOUT) as grader_pool:
        # Start both workers before anything is timed.
        warm_up = [(["\\frac{\\sqrt{2}}{2}"], ["\\frac{1}{\\sqrt{2}}"])] * 2
        assert grader_pool.grade_answer_lists(warm_up) == [True, True]
        yield grader_pool


def _payloads(marker: Path) -> list[str]:
    return [
        f"__import__('os').system('touch {marker}')",
        f"eval(\"open('{marker}', 'w')\")",
        f"exec('import os; os.system(\"touch {marker}\")')",
        f"(lambda: __import__('os').system('touch {marker}'))()",
        f"Symbol('x').__class__.__init__.__globals__['os'].system('touch {marker}')",
        "().__class__.__base__.__subclasses__()",
    ]


def _graded_within_limit(pool: GraderPool, grade) -> bool:
    pool.start()  # workers killed by an earlier case are back: time the grading alone
    start = time.monotonic()
    verdict = grade()
    elapsed = time.monotonic() - start
    assert elapsed < TIMEOUT + MARGIN, f"took {elapsed:.1f} s"
    return verdict


def _still_serves(pool: GraderPool) -> None:
    assert pool.math_equal("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}")
    assert pool.math_equal("x^2+2x+1", "(x+1)^2")
    assert not pool.math_equal("\\frac{1}{3}", "\\frac{\\sqrt{3}}{2}")
    assert pool.math_equal("0.5", "\\frac{1}{2}")


def test_code_in_answers_never_runs(pool, tmp_path):
    marker = tmp_path / "pwned_X"
    for payload in _payloads(marker):
        responses = [
            f"So the answer is $\\boxed{{{payload}}}$.",
            f"The answer is {payload}",
            f"Final Answer: The final answer is ${payload}$. I hope it is correct.",
            f"\\boxed{{x={payload}}}",
            f"\\boxed{{({payload}, 1)}}",
        ]
        for response in responses:
            assert not _graded_within_limit(pool, lambda: is_correct_math(response, "\\boxed{5}", None, TIMEOUT, pool))
            assert not _graded_within_limit(pool, lambda: is_correct_math(response, "\\boxed{x}", None, TIMEOUT, pool))
        assert not _graded_within_limit(pool, lambda: pool.math_equal(payload, "1"))
        assert not marker.exists()
    _still_serves(pool)


def test_the_parser_itself_never_evaluates(tmp_path):
    # Bypass the letter-count guard and hand the payloads straight to the worker's parsers (the
    # whitelisted stand-ins for sympy's parse_expr and sympify, which would run them).
    marker = tmp_path / "pwned_parser"
    engine = _SymbolicEngine()
    for payload in _payloads(marker):
        for latex in (payload, f"\\frac{{{payload}}}{{2}}", f"x^{{{payload}}}"):
            for text in (latex, latex_to_text(latex)):
                for parse in (safe_sympy.parse_like_sympy_parse, safe_sympy.numeric_value_like_N):
                    try:
                        parse(text)
                    except Exception:
                        pass
            assert not engine.equal(latex, "1")
    assert not marker.exists()


def test_the_whitelisted_parser_gives_sympy_objects():
    import sympy

    x = sympy.Symbol("x")
    assert safe_sympy.parse_like_sympy_parse("2pi") == 2 * sympy.pi  # implicit multiplication
    assert safe_sympy.parse_like_sympy_parse("(x+1)^2") == (x + 1) ** 2
    assert safe_sympy.parse_like_sympy_parse("sqrt(8)/2") == sympy.sqrt(2)
    assert safe_sympy.parse_like_sympy_parse("f(2)") == 2 * sympy.Symbol("f")  # as parse_expr reads it
    assert safe_sympy.parse_like_sympy_parse("5!") == 120
    assert safe_sympy.parse_like_sympy_parse("(1,2)") == (1, 2)
    assert safe_sympy.numeric_value_like_N("1/3") == sympy.Rational(1, 3).evalf()
    # The same objects as sympy's own parse_expr (run here on fixed, trusted strings only).
    from sympy.parsing.sympy_parser import parse_expr

    trusted = ["2pi", "xy", "sin x", "x(x+1)", "2^3^2", "3!", "1/3", "0.5", "log_21024", "E", "sqrt 2",
               "21/5sqrt(21)", "288(3.14159)", "(sqrt(5)+1)/2", "5^1/2", "x^2+2x+1", "7+3/4", "2 I", "pi/2"]
    for text in trusted:
        expected = parse_expr(text.replace("^", "**"), transformations=safe_sympy.IMPLICIT_TRANSFORMATIONS)
        assert safe_sympy.parse_like_sympy_parse(text) == expected, text
    for rejected in ("x.y", "a[0]", "x.__class__", "(lambda: 1).__code__", "open('f')", "__import__('os')", "S('x')", "getattr(x, 'y')"):
        with pytest.raises(Exception):
            safe_sympy.parse_like_sympy_parse(rejected)


@pytest.mark.parametrize(
    "pred, gold",
    [
        (NESTED_BRACES, "1"),  # the LaTeX renderer recurses 10k levels deep
        ("(" * 10_000 + "1" + ")" * 10_000, "(" * 10_000 + "2" + ")" * 10_000),  # tuple rule recursion
        ("\\frac{" * 5_000 + "1" + "}{2}" * 5_000, "3"),
        (ONE_MEGABYTE_SUM, "500001"),  # 1 MB expression: times out
        ("9" * 1_000_000, "5"),  # 1 MB number: numeric fast path
        ("\\frac{1}{0}", "0"),
        ("\\frac{1}{0}", "\\frac{2}{0}"),
        ("\\frac{1}{0}", "\\infty"),
        ("10^{10^{10}}", "10^{10^{10}}+1"),  # refused by the guard, as officially
        (POWER_TOWER, "5"),  # allowed by the guard: memory cap or timeout in the worker
        ("x^{x^{x^{x}}}", "x^{x^{x^{x^{x}}}}"),
        ("1000000!", "1"),
    ],
)
def test_pathological_answers_are_wrong_in_bounded_time(pool, pred, gold):
    assert not _graded_within_limit(pool, lambda: pool.math_equal(pred, gold))
    _still_serves(pool)


def test_huge_equal_strings_are_equal_without_any_computation(pool):
    start = time.monotonic()
    assert pool.math_equal("10^{10^{10}}", "10^{10^{10}}")
    assert pool.math_equal(POWER_TOWER, POWER_TOWER)
    assert pool.math_equal(ONE_MEGABYTE_SUM, ONE_MEGABYTE_SUM)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize(
    "response",
    [
        "\\boxed{" + NESTED_BRACES + "}",
        "\\boxed{" + "\\boxed{" * 20_000 + "1" + "}" * 20_000 + "}",
        "\\boxed{" + "\\text{" * 100_000 + "}",
        "\\boxed{" + "\\mbox{" * 100_000 + "}",
        "\\boxed{" + "1" * 500_000 + ".x}",
        "x" * 1_000_000,
        "1" * 1_000_000,
        "he answer is " + "." * 1_000_000 + "x",
        "```output\n" + "(" * 500_000,
    ],
    ids=[
        "nested-braces", "nested-boxes", "text-1MB", "mbox-1MB", "digits-dot",
        "letters-1MB", "digits-1MB", "dots-1MB", "parens-output",
    ],
)
def test_megabyte_responses_are_graded_in_bounded_time(pool, response):
    task = MathTask(timeout=TIMEOUT, pool=pool)
    row = {"problem": "Compute 2+3.", "solution": "We get $\\boxed{5}$."}
    start = time.monotonic()
    extract_math_answer(response)
    assert time.monotonic() - start < MARGIN, "extraction runs in the calling process and must stay linear"
    assert not _graded_within_limit(pool, lambda: task.is_correct(response, row))


def test_a_batch_with_hostile_cases_still_grades_the_others(pool):
    cases = [
        (["\\frac{\\sqrt{3}}{3}"], ["\\frac{1}{\\sqrt{3}}"]),
        ([ONE_MEGABYTE_SUM], ["1"]),
        (["\\frac{1}{4}"], ["\\frac{\\sqrt{2}}{4}"]),
        (["x^2-1"], ["(x-1)(x+1)"]),
        (["2\\sqrt{2}"], ["\\sqrt{8}"]),
        (["\\frac{\\pi}{4}"], ["45"]),
    ]
    timeouts_before = pool.stats["timeouts"]
    pool.start()
    start = time.monotonic()
    assert pool.grade_answer_lists(cases) == [True, False, False, True, True, False]
    # The other worker grades the rest while one is stuck on the hanging case.
    assert time.monotonic() - start < TIMEOUT + MARGIN
    assert pool.stats["timeouts"] - timeouts_before == 1
    _still_serves(pool)


def test_a_worker_killed_mid_case_is_replaced():
    with GraderPool(num_workers=1, timeout=30.0) as pool:
        _still_serves(pool)
        victim = pool._workers[0].process
        assert victim is not None
        killer = threading.Timer(1.0, os.kill, (victim.pid, signal.SIGKILL))
        killer.start()
        start = time.monotonic()
        try:
            assert not pool.math_equal(ONE_MEGABYTE_SUM, "1")  # would run past the 30 s timeout
        finally:
            killer.cancel()
        assert time.monotonic() - start < 10.0
        assert pool.stats["crashes"] == 1 and pool.stats["timeouts"] == 0
        assert pool._workers[0].process is not victim
        _still_serves(pool)


def test_a_worker_that_died_while_idle_is_replaced():
    with GraderPool(num_workers=1, timeout=15.0) as pool:
        _still_serves(pool)
        victim = pool._workers[0].process
        assert victim is not None
        victim.kill()
        victim.wait()
        _still_serves(pool)
        assert pool.stats["crashes"] == 0


# ------------------------------------------------------------------ the math_verify mode


def _math_verify_within_limit(pool: GraderPool, pairs: list[tuple[str, str]]) -> list[bool]:
    pool.start()
    start = time.monotonic()
    verdicts = pool.math_verify_many(pairs, TIMEOUT)
    elapsed = time.monotonic() - start
    # the pairs run two at a time, each under the timeout
    assert elapsed < (len(pairs) + 1) // 2 * TIMEOUT + MARGIN, f"took {elapsed:.1f} s"
    return verdicts


def test_math_verify_code_in_answers_never_runs(pool, tmp_path):
    marker = tmp_path / "pwned_mv"
    pairs = []
    for payload in _payloads(marker):
        pairs += [("\\boxed{5}", f"So the answer is $\\boxed{{{payload}}}$."), ("$x$", f"${payload}$"), (payload, payload + "+1")]
    assert _math_verify_within_limit(pool, pairs) == [False] * len(pairs)
    assert not marker.exists()
    assert pool.math_verify_many([("$\\boxed{\\frac{1}{2}}$", "The answer is $\\boxed{0.5}$")]) == [True]


@pytest.mark.parametrize(
    "pred, gold",
    [
        (NESTED_BRACES, "1"),
        ("\\frac{" * 5_000 + "1" + "}{2}" * 5_000, "3"),
        (ONE_MEGABYTE_SUM, "500001"),
        ("9" * 1_000_000, "5"),
        ("10^{10^{10}}", "10^{10^{10}}+1"),
        (POWER_TOWER, "5"),
        ("x^{x^{x^{x}}}", "x^{x^{x^{x^{x}}}}"),
        ("1000000!", "1"),
        ("\\boxed{" * 20_000 + "1" + "}" * 20_000, "2"),
    ],
    ids=["nested-braces", "nested-fracs", "sum-1MB", "digits-1MB", "tower", "power-tower", "x-tower", "factorial", "nested-boxes"],
)
def test_math_verify_pathological_answers_are_wrong_in_bounded_time(pool, pred, gold):
    pairs = [(f"$\\boxed{{{gold}}}$", f"$\\boxed{{{pred}}}$")]
    assert _math_verify_within_limit(pool, pairs) == [False]
    assert pool.math_verify_many([("$\\boxed{2}$", "so $\\boxed{\\sqrt{4}}$")]) == [True]


def test_math_verify_task_grades_megabyte_responses_in_bounded_time(pool):
    task = MathTask(timeout=TIMEOUT, pool=pool, grading_mode="math_verify")
    row = {"problem": "Compute 2+3.", "solution": "We get $\\boxed{5}$."}
    responses = ["\\boxed{" + NESTED_BRACES + "}", "x" * 1_000_000, "1" * 1_000_000, "\\boxed{" + "\\text{" * 100_000 + "}",
                 "The answer is $\\boxed{5}$."]
    pool.start()
    start = time.monotonic()
    assert task.grade_many(responses, [row] * len(responses)) == [False, False, False, False, True]
    assert time.monotonic() - start < 3 * TIMEOUT + MARGIN
