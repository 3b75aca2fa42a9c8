"""MATH answer extraction and grading (spec §3) on real rows and on hand-checked cases.

Real data: every MATH-500 test row and every one of the 12,000 train rows must grade its own
gold solution as correct, and the row's `answer` field, boxed as a response, must grade correct
too, except on the rows whose solution boxes several different things (see below).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from vineppo.tasks import get_task
from vineppo.tasks.math import MathTask
from vineppo.tasks.math_grading import (
    GraderPool,
    count_unknown_letters,
    default_grader_pool,
    extract_boxed_answers,
    extract_math_answer,
    is_correct_math,
    latex_to_text,
    math_equal,
    parse_number,
    shutdown_default_grader_pool,
    strip_string,
    symbolic_gate_allows,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COMMA_QUESTION = "Find all solutions. Enter all the solutions, separated by commas."


def _rows(split: str) -> list[dict]:
    path = DATA / "math" / f"{split}.jsonl"
    if not path.is_file():
        pytest.fail(f"MATH data not found at {path}: tests need the shared data directory beside the repo")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def test_rows() -> list[dict]:
    rows = _rows("test")
    assert len(rows) == 500
    return rows


@pytest.fixture(scope="module")
def train_rows() -> list[dict]:
    rows = _rows("train")
    assert len(rows) == 12000
    return rows


@pytest.fixture(scope="module")
def pool():
    with GraderPool(num_workers=2, timeout=15.0) as grader_pool:
        yield grader_pool


@pytest.fixture(scope="module")
def task(pool) -> MathTask:
    return MathTask(timeout=15.0, pool=pool)


def _distinct(answers: list[str]) -> list[str]:
    return list(dict.fromkeys(answers))


# ------------------------------------------------------------------------------------------
# Real rows
# ------------------------------------------------------------------------------------------


def test_every_math500_row_grades_its_own_solution_correct(task, test_rows):
    verdicts = task.grade_many([r["solution"] for r in test_rows], test_rows)
    wrong = [r["unique_id"] for r, ok in zip(test_rows, verdicts) if not ok]
    assert wrong == []
    assert [task.reward(r["solution"], r) for r in test_rows[:20]] == [1.0] * 20


def test_every_train_row_grades_its_own_solution_correct(task, train_rows):
    start = time.monotonic()
    verdicts = task.grade_many([r["solution"] for r in train_rows], train_rows)
    wrong = [r["unique_id"] for r, ok in zip(train_rows, verdicts) if not ok]
    assert wrong == []
    assert time.monotonic() - start < 20, "self-grading is a string fast path and should be quick"


def test_gold_is_extracted_from_the_solution_and_agrees_with_the_answer_field(test_rows, train_rows):
    # The `answer` field is the LAST box of the solution; the gold answer is EVERY box. They
    # agree (after removing repeated boxes) except where a solution boxes different things:
    #  - test/number_theory/459 boxes `15\frac{39}{40}` and `\frac{639}{40}` (the same number);
    #  - 41 train rows. 4 of them box the same value twice in two forms (train/prealgebra/452
    #    `-b+2` and `2-b`, test/geometry/66 `\frac{25}{13}` and `1\frac{12}{13}`,
    #    test/prealgebra/224 and 1088); the other 37 box an intermediate result, a rejected
    #    candidate or each part of a multi-part answer, e.g. train/algebra/152 `(-2,18)` and
    #    `(8,38)`, train/precalculus/1149 `30^\circ`, `150^\circ` (twice each),
    #    train/intermediate_algebra/1266 boxes `\phantom{09}` inside an arithmetic layout, and
    #    train/counting_and_probability/955 has a box in its Asymptote code (`"+string(n)+"`).
    #    (Train rows named test/... are the original-test problems outside MATH-500.)
    # train/algebra/24014 and 25040 write `\boxed 2` / `\boxed 9` (no braces): as with the
    # official extractor, no gold answer is found in them.
    def disagreements(rows: list[dict]) -> list[str]:
        out = []
        for row in rows:
            gold = _distinct(extract_math_answer(row["solution"], row["problem"]))
            from_field = _distinct(extract_math_answer("\\boxed{" + row["answer"] + "}", row["problem"]))
            if gold != from_field and gold:
                assert len(gold) > 1 and gold[-len(from_field):] == from_field, row["unique_id"]
                out.append(row["unique_id"])
        return out

    assert disagreements(test_rows) == ["test/number_theory/459.json"]
    train_disagreements = disagreements(train_rows)
    assert len(train_disagreements) == 41
    assert {"train/algebra/152.json", "train/prealgebra/452.json", "test/geometry/66.json"} <= set(train_disagreements)
    for uid in ("train/algebra/24014.json", "train/algebra/25040.json"):
        row = next(r for r in train_rows if r["unique_id"] == uid)
        assert extract_math_answer(row["solution"], row["problem"]) == []


def test_answer_field_as_a_response_is_correct_except_on_multi_box_rows(task, test_rows, train_rows):
    # A response that boxes only the `answer` field must match EVERY distinct gold box (official
    # eval_math), so it fails exactly where the solution boxes values that are not all equal.
    def failures(rows: list[dict]) -> list[str]:
        responses = [f"Therefore the answer is $\\boxed{{{r['answer']}}}$." for r in rows]
        return [r["unique_id"] for r, ok in zip(rows, task.grade_many(responses, rows)) if not ok]

    # test/number_theory/459 passes through the symbolic check (15 39/40 == 639/40), and so do
    # the 4 train rows with two forms of one value; the 37 others fail, as they would officially,
    # and so do the two rows with an unbraced `\boxed 2` (no gold answer: officially only a
    # response without any answer matches the empty gold list).
    assert failures(test_rows) == []
    train_failures = failures(train_rows)
    assert len(train_failures) == 39
    assert {"train/algebra/24014.json", "train/algebra/25040.json"} <= set(train_failures)
    assert not {"train/prealgebra/452.json", "test/geometry/66.json"} & set(train_failures)
    for uid in set(train_failures) - {"train/algebra/24014.json", "train/algebra/25040.json"}:
        row = next(r for r in train_rows if r["unique_id"] == uid)
        assert len(_distinct(task.gold_answers(row))) > 1, uid
    row = next(r for r in train_rows if r["unique_id"] == "train/algebra/24014.json")
    assert task.is_correct("no answer here", row) and not task.is_correct("\\boxed{2}", row)


# ------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response, expected",
    [
        # 1. the Minerva sentence wins over boxes
        ("so $\\boxed{3}$.\nFinal Answer: The final answer is $4$. I hope it is correct.", ["4"]),
        # 2. every box, brace-matched, in order
        ("We get \\boxed{1} and then \\boxed{\\frac{1}{2}}.", ["1", "\\frac{1}{2}"]),
        ("$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", ["(3,\\frac{\\pi}{2})"]),
        # a box beats "the answer is"
        ("The answer is 5, or rather \\boxed{6}.", ["6"]),
        # "boxed" but no closed box: nothing, and no fallback to later rules
        ("the answer is 5, \\boxed{6", []),
        # an unbraced box gives nothing (and there is no fallback, since "boxed" occurs)
        ("so $x = \\boxed 5$.", []),
        ("So $\\boxed 90^\\circ$", []),
        # 3. text after the last "he answer is", first line only, `:` and `.` stripped
        ("The answer is 4. No wait, the answer is: $12$.\nDone, 13", ["12"]),
        # 4. the last ```output block
        ("```python\nprint(6*7)\n```\n```output\n42\n```\nSo 41 it is", ["42"]),
        # 5. the last number, commas removed
        ("First 3, then a total of 1,234.5 apples", ["1234.5"]),
        ("no digits here", []),
        ("", []),
    ],
)
def test_extraction_priority(response, expected):
    assert extract_math_answer(response) == expected


def test_comma_lists_are_split_only_when_the_question_asks_for_them():
    response = "The solutions are $\\boxed{3, -1, 2}$."
    assert extract_math_answer(response, COMMA_QUESTION) == ["3", "-1", "2"]
    assert extract_math_answer(response, "Find x.") == ["3,-1,2"]
    # tuples and intervals stay whole even then
    assert extract_math_answer("\\boxed{(1,2)}", COMMA_QUESTION) == ["(1,2)"]
    # `\text{ and }` always splits
    assert extract_math_answer("\\boxed{2 \\text{ and } 5}") == ["2", "5"]


def test_boxed_answers_follow_the_official_piece_rules():
    assert extract_boxed_answers("\\boxed{a{b}c}") == ["a{b}c"]
    assert extract_boxed_answers("\\fbox{1} \\boxed{2}") == ["2"]
    # a box is searched only up to the next `boxed{`: for nested boxes the inner one counts
    assert extract_boxed_answers("\\boxed{1 + \\boxed{2}}") == ["2"]
    # `}%` keeps the closing brace, as in the official code
    assert extract_boxed_answers("\\boxed{50}%") == ["50}"]


# ------------------------------------------------------------------------------------------
# strip_string
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("\\dfrac{3}{4}", "\\frac{3}{4}"),
        ("\\tfrac12", "\\frac{1}{2}"),
        ("\\frac1{72}", "\\frac{1}{72}"),
        ("3/4", "\\frac{3}{4}"),
        ("\\sqrt2", "\\sqrt{2}"),
        ("\\left( 1, 2 \\right)", "(1,2)"),
        ("10\\text{ cm}", "10"),
        ("\\text{Evelyn}", "Evelyn"),
        ("\\$18.90", "18.90"),
        ("5.000", "5"),
        ("2.00 inches", "2inches"),
        (".5", "0.5"),
        ("90^\\circ", "90"),
        ("45^{\\circ}", "45"),
        ("25\\%", "25%"),
        ("25\\\\%", "25%"),  # the official code replaces `\%` twice
        ("10,\\!000", "10,000"),
        ("x\\in [1, 2]", "[1,2]"),
        ("x \\in [1, 2]", "x\\in[1,2]"),  # `x\in` is removed before the spaces are
        ("(-infinity, 3)", "(-\\infty,3)"),
        ("(-inf, 3)", "(-\\infty,3)"),
        ("3 + 2j", "3+2i"),
        ("\\mathbf{0}", "{0}"),
        ("4\\mbox{ sq units}", "4"),
        ("12 \\cdot 3", "123"),  # the official code deletes \cdot outright
        ("7.", "7"),
        ("5\\\\", "5"),
        ("8 p.m.", "8p.m"),  # the trailing dot goes first, so the `p.m.` rule misses
        ("", ""),
    ],
)
def test_strip_string(raw, normalised):
    assert strip_string(raw) == normalised


def test_strip_string_is_fast_on_hostile_strings():
    hostile = [
        "\\text{" * 100_000,
        "\\mbox{" * 100_000,
        "1" * 500_000 + ".x",
        "." * 500_000 + "x",
        "\\frac" * 100_000,
    ]
    for text in hostile:
        start = time.monotonic()
        strip_string(text)
        assert time.monotonic() - start < 2.0, text[:20]


# ------------------------------------------------------------------------------------------
# Equivalence rules, each with cases that must hold and cases that must not
# ------------------------------------------------------------------------------------------

EQUAL = [
    # numbers within 1e-3
    ("3.0005", "3"),
    ("0.3333", "\\frac{1}{3}"),
    ("5,600", "5600"),
    ("5600", "5,600"),
    ("-7.0", "-7"),
    # percentage variants: gold x {1/100, 1, 100}
    ("0.5", "50"),
    ("50", "0.5"),
    ("50%", "0.5"),
    ("25%", "25"),
    # fractions vs decimals
    ("0.5", "\\frac{1}{2}"),
    ("-0.75", "-\\frac{3}{4}"),
    ("\\frac{6}{8}", "\\frac{3}{4}"),
    # tuples and intervals, element by element (bracket kinds are not compared, as officially)
    ("(1,\\frac{1}{2})", "(1,0.5)"),
    ("(3,\\frac{\\pi}{2})", "(3,\\frac{\\pi}{2})"),
    ("[2,5)", "[2,5)"),
    ("(1,2)", "[1,2]"),
    ("(-\\infty,0)\\cup(1,\\infty)", "(1,\\infty)\\cup(-\\infty,0)"),
    # matrices, entry by entry
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{bmatrix}1\\\\2\\end{bmatrix}"),
    ("\\begin{pmatrix}0.5&1\\\\2&3\\end{pmatrix}", "\\begin{pmatrix}\\frac{1}{2}&1\\\\2&3\\end{pmatrix}"),
    # equations
    ("x=5", "5"),
    ("5", "k=5"),
    ("y=2x+1", "2x-y+1=0"),
    ("y=2x+1", "y=1+2x"),
    # symbolic
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\frac{\\pi}{3}", "\\frac{2\\pi}{6}"),
    ("3.1416", "\\pi"),
    ("0.707", "\\frac{\\sqrt{2}}{2}"),
    ("2\\frac{1}{2}", "\\frac{5}{2}"),
    ("1,2", "12"),  # parse_digits deletes every comma
]

NOT_EQUAL = [
    ("3.002", "3"),
    ("0.33", "\\frac{1}{3}"),
    ("25", "0.5"),
    ("(1,2)", "(2,1)"),
    ("(1,2,3)", "(1,2)"),
    ("(-\\infty,0)\\cup(1,\\infty)", "(-\\infty,0)\\cup(2,\\infty)"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\3\\end{pmatrix}"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1&2\\end{pmatrix}"),
    ("y=2x+1", "y=2x+2"),
    ("abc=5", "5"),  # only a short left-hand side (<= 2 characters) is dropped
    ("x^2+2x+1", "(x+1)^3"),
    ("\\frac{\\pi}{2}", "90"),
    ("3.14", "\\pi"),
    ("\\sqrt{2}", "2"),
    ("C", "c"),  # symbols are case-sensitive, as with the official parse_expr
    ("(A)", "(B)"),
    ("1024", "2^{10}"),  # the official guard refuses exponents of two or more digits
    ("\\text{Monday}", "\\text{Tuesday}"),
    ("", "5"),
]


# One answer against one gold answer: the official `is_correct` (unions split at `\cup`, then
# `math_equal`). Every verdict above was checked against the official code.
@pytest.mark.parametrize("pred, gold", EQUAL)
def test_equal_pairs(pool, pred, gold):
    assert pool.answer_lists_match([pred], [gold]), (pred, gold)


@pytest.mark.parametrize("pred, gold", NOT_EQUAL)
def test_unequal_pairs(pool, pred, gold):
    assert not pool.answer_lists_match([pred], [gold]), (pred, gold)


def test_math_equal_alone_does_not_split_unions(pool):
    union, swapped = "(-\\infty,0)\\cup(1,\\infty)", "(1,\\infty)\\cup(-\\infty,0)"
    assert pool.math_equal(union, union)
    assert not pool.math_equal(union, swapped)
    assert math_equal("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", timeout=15.0, pool=pool)


def test_list_answers_match_as_sets(pool):
    def grade(response: str, gold: str, question: str = COMMA_QUESTION) -> bool:
        return is_correct_math(response, gold, question, pool=pool)

    gold = "The roots are $\\boxed{1, 2, 3}$."
    assert grade("\\boxed{3, 1, 2}", gold)
    assert grade("\\boxed{3,1,2,2}", gold)  # repeats are dropped
    assert grade("\\boxed{1.0, \\frac{4}{2}, 3}", gold)
    assert not grade("\\boxed{1, 2}", gold)
    assert not grade("\\boxed{1, 2, 3, 4}", gold)
    assert not grade("\\boxed{1, 2, 4}", gold)
    # Several boxes in the response: only the last len(gold) distinct ones count.
    assert grade("First \\boxed{7}. Finally \\boxed{5}.", "\\boxed{5}", None)
    assert not grade("First \\boxed{5}. Finally \\boxed{7}.", "\\boxed{5}", None)
    # A gold with two different boxes needs both.
    assert grade("\\boxed{2} and \\boxed{4}", "either \\boxed{2} or \\boxed{4}", None)
    assert not grade("\\boxed{4}", "either \\boxed{2} or \\boxed{4}", None)
    # \text{ and } lists
    assert grade("\\boxed{5 \\text{ and } 2}", "\\boxed{2 \\text{ and } 5}", None)


def test_parse_number():
    assert parse_number("5,600") == 5600.0
    assert parse_number("-1,234.5") == -1234.5
    assert parse_number("25%") == 0.25
    assert parse_number("12.5\\%") == 0.125
    assert parse_number("1,2") == 12.0  # every comma goes, as in the official parse_digits
    assert parse_number("1,2345") == 12345.0
    assert parse_number("\\frac{1}{2}") is None


def test_symbolic_gate_mirrors_the_official_guard():
    assert latex_to_text("x^{10}+\\frac{\\alpha}{2}") == "x^10+ α/2"
    assert latex_to_text("\\frac{21}{5\\sqrt{21}}") == "21/5sqrt(21)"
    assert latex_to_text("125%dollars") == "125"  # `%` starts a LaTeX comment
    assert count_unknown_letters(latex_to_text("\\sqrt{x}+\\pi y")) == 2
    assert symbolic_gate_allows("\\sqrt{x}+\\pi y")
    assert not symbolic_gate_allows("x+y+z")  # three unknown letters
    assert not symbolic_gate_allows("\\text{Evelyn}")
    assert not symbolic_gate_allows("2^{10}")
    assert not symbolic_gate_allows("10^{10^{10}}")
    assert not symbolic_gate_allows("1000!")


# ------------------------------------------------------------------------------------------
# The pool and the task
# ------------------------------------------------------------------------------------------


def test_fast_paths_do_not_start_the_pool():
    with GraderPool() as pool:
        assert pool.math_equal("5", "5.0")
        assert pool.math_equal("\\frac{1}{2}", "\\frac{1}{2}")
        assert not pool.math_equal("5", "6")
        assert pool.answer_lists_match(["1", "2"], ["2", "1"])
        assert pool._workers == [] and pool.stats["worker_cases"] == 0


def test_pool_context_manager_stops_its_workers():
    with GraderPool(num_workers=2) as pool:
        pool.start()
        assert len(pool._workers) == 2 and all(w.ready and w.alive for w in pool._workers)
        assert pool.math_equal("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}")
        processes = [w.process for w in pool._workers]
        assert pool.stats["worker_cases"] == 1
    assert all(p is None or p.poll() is not None for p in processes)
    with pytest.raises(RuntimeError):
        pool._run([], None)


def test_default_pool_is_created_lazily_and_can_be_shut_down():
    shutdown_default_grader_pool()
    first = default_grader_pool()
    assert first is default_grader_pool()
    assert math_equal("\\sqrt{4}", "2")
    shutdown_default_grader_pool()
    assert default_grader_pool() is not first
    shutdown_default_grader_pool()


def test_math_task_interface(task, test_rows):
    row = test_rows[0]  # test/precalculus/807: (3, pi/2)
    assert isinstance(get_task("math"), MathTask)
    assert (task.name, task.query_field, task.solution_field) == ("math", "problem", "solution")
    assert task.required_fields == ("problem", "solution")
    assert task.gold_answer(row) == "(3,\\frac{\\pi}{2})"
    assert task.extract_answer("so \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}") == "(3,\\frac{\\pi}{2})"
    assert task.extract_answer("nothing") is None
    assert task.prompt(row).startswith("[MATH_TASK] Problem:\nConvert the point")
    assert task.is_correct("We get $\\boxed{(3, \\tfrac{\\pi}{2})}$.", row)
    assert task.reward("The answer is $(3,\\frac{\\pi}{2})$.", row) == 1.0
    assert task.reward("\\boxed{(3, \\pi)}", row) == 0.0
    for bad in (None, "", "   ", "no answer at all"):
        assert task.reward(bad, row) == 0.0  # type: ignore[arg-type]
    responses = ["\\boxed{(3,\\frac{\\pi}{2})}", None, "\\boxed{3}"]
    assert task.grade_many(responses, [row, row, row]) == [True, False, False]  # type: ignore[list-item]
    with pytest.raises(ValueError):
        task.grade_many(["x"], [])
    with pytest.raises(ValueError):
        MathTask(timeout=0)
    offsets = task.split_steps(row["solution"])
    assert offsets[0] == 0 and offsets[-1] == len(row["solution"]) and offsets == sorted(offsets)
    task.validate_row(row)
    with pytest.raises(ValueError):
        task.validate_row({"problem": "p", "solution": "no box here"})
