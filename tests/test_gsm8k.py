"""GSM8K task: gold solutions, answer extraction, grading, step splitting (spec §1.2, §3)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from vineppo.tasks import PROMPT_TEMPLATE, STOP_STRINGS, TASK_NAMES, Task, get_task
from vineppo.tasks.gsm8k import (
    GSM8KTask,
    answers_match,
    extract_answer,
    remove_calculator_annotations,
    split_steps,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TASK = GSM8KTask()


def _rows(split: str) -> list[dict]:
    path = DATA / "gsm8k" / f"{split}.jsonl"
    if not path.is_file():
        pytest.fail(f"GSM8K data not found at {path}: tests need the shared data directory beside the repo")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def all_rows() -> list[dict]:
    rows = _rows("train") + _rows("test")
    assert len(rows) == 7473 + 1319
    return rows


def _steps(text: str) -> list[str]:
    o = split_steps(text)
    return [text[a:b] for a, b in zip(o, o[1:])]


def _check_partition(text: str, o: list[int]) -> None:
    assert o[0] == 0 and o[-1] == len(text) and len(o) >= 2
    assert all(a <= b for a, b in zip(o, o[1:]))
    assert "".join(text[a:b] for a, b in zip(o, o[1:])) == text


# ---------------------------------------------------------------- the official splitter, as a reference


def _official_split(text: str) -> list[int]:
    """The official line splitter (original format) re-stated over strings, for texts where it is
    well-defined: at most one "\\n#### " and at least one non-blank line or an answer tail."""
    parts = text.split("\n#### ")
    assert len(parts) <= 2
    body, answer = (parts[0], None) if len(parts) == 1 else (parts[0], parts[1])
    steps = body.split("\n")
    first = next((i for i, s in enumerate(steps) if s.strip()), None)
    if first:
        steps = ["\n".join(steps[: first + 1])] + steps[first + 1:]
    if answer is not None:
        last = next((i for i in range(len(steps) - 1, -1, -1) if steps[i].strip()), 0)
        steps = steps[:last] + ["\n".join(steps[last:]) + "\n#### " + answer]
    offsets = [0]
    for i, s in enumerate(steps):
        offsets.append(offsets[-1] + len(s) + (1 if i else 0))
    assert offsets[-1] == len(text)
    return offsets


def test_splitter_matches_official_on_random_texts():
    rng = random.Random(0)
    pieces = ["a", "b c", " ", "\n", "\n", "\n#### ", "#", "####", "7", "\t", "x = 3"]
    checked = 0
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        o = split_steps(text)
        _check_partition(text, o)
        well_defined = text.count("\n#### ") <= 1 and ("\n#### " in text or text.strip())
        if well_defined:
            assert o == _official_split(text), repr(text)
            checked += 1
    assert checked > 10000


# ---------------------------------------------------------------- gold data


def test_every_gold_solution_is_graded_correct(all_rows):
    for row in all_rows:
        gold = TASK.gold_solution(row)
        assert TASK.is_correct(gold, row), row["answer"]
        assert TASK.reward(TASK.sft_target(row), row) == 1.0


def test_every_gold_splits_into_its_lines_and_joins_back(all_rows):
    for row in all_rows:
        for text in (row["answer"], TASK.gold_solution(row)):
            o = split_steps(text)
            _check_partition(text, o)
            # one step per line, the "#### N" line merged into the last step
            assert len(o) - 1 == text.count("\n")
            assert o == _official_split(text)
        # the SFT target "\n{gold}\n": the leading "\n" joins step 1, the tail keeps its "\n"
        gold = TASK.gold_solution(row)
        target = TASK.sft_target(row)
        assert split_steps(target) == [0] + [b + 1 for b in split_steps(gold)[1:-1]] + [len(target)]


def test_gold_solution_removes_calculator_annotations(all_rows):
    row = all_rows[0]
    assert row["answer"].startswith("Natalia sold 48/2 = <<48/2=24>>24 clips in May.")
    gold = TASK.gold_solution(row)
    assert gold == (
        "Natalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"
    )
    assert all("<<" not in TASK.gold_solution(r) and ">>" not in TASK.gold_solution(r) for r in all_rows)
    assert all(TASK.gold_solution(r).endswith("\n#### " + TASK.gold_answer(r)) for r in all_rows)
    assert GSM8KTask(remove_calculator=False).gold_solution(row) == row["answer"]
    assert remove_calculator_annotations("a <<1+\n1=2>>2 b <<x>>") == "a 2 b "


def test_gold_answers_and_prompt(all_rows):
    row = all_rows[0]
    assert TASK.gold_answer(row) == "72"
    assert TASK.prompt(row) == PROMPT_TEMPLATE.format(query=row["question"])
    assert TASK.prompt(row).startswith("[MATH_TASK] Problem:\n") and TASK.prompt(row).endswith("\n\nSolution:")
    assert TASK.sft_target(row) == "\n" + TASK.gold_solution(row) + "\n"
    assert TASK.query({"question": "  Q?\n", "answer": "#### 1"}) == "Q?"
    with_commas = [r for r in all_rows if "," in TASK.gold_answer(r)]
    assert len(with_commas) == 79 + 14


# ---------------------------------------------------------------- splitter rules, by hand


@pytest.mark.parametrize(
    "text, steps",
    [
        # lines; every step after the first keeps its leading "\n"; answer tail joins the last line
        ("A.\nB.\n#### 5", ["A.", "\nB.\n#### 5"]),
        ("A.\nB.\nC.", ["A.", "\nB.", "\nC."]),
        # leading empty / whitespace-only pieces are merged forward into the first non-blank line
        ("\n\nA.\nB.\n#### 5", ["\n\nA.", "\nB.\n#### 5"]),
        ("  \n\tA.\nB.", ["  \n\tA.", "\nB."]),
        # a blank line in the middle is a step of its own (official)
        ("A.\n\nB.\n#### 5", ["A.", "\n", "\nB.\n#### 5"]),
        ("A.\n \nB.", ["A.", "\n ", "\nB."]),
        # blank lines just before the answer tail go with the last non-blank line
        ("A.\nB.\n\n\n#### 5", ["A.", "\nB.\n\n\n#### 5"]),
        # without an answer tail, trailing blank lines stay steps (official)
        ("A.\nB.\n\n", ["A.", "\nB.", "\n", "\n"]),
        # the tail runs to the end, newlines included
        ("A.\nB.\n#### 5\n\nmore\ntext", ["A.", "\nB.\n#### 5\n\nmore\ntext"]),
        # only "\n#### " (newline, marker, space) is the tail; other marker lines are plain lines
        ("A.\n####5", ["A.", "\n####5"]),
        ("A. #### 5", ["A. #### 5"]),
        ("#### 5", ["#### 5"]),
        # only an answer tail: one step (official)
        ("\n#### 5", ["\n#### 5"]),
        ("\n\n#### 5", ["\n\n#### 5"]),
        # DEPARTURE (official raises): several tails, the last one is the tail
        ("A.\n#### 4\n#### 5", ["A.", "\n#### 4\n#### 5"]),
        ("A.\n#### 4\nB.\n#### 5", ["A.", "\n#### 4", "\nB.\n#### 5"]),
        ("\n#### \n#### 5", ["\n#### \n#### 5"]),
        # DEPARTURE (official: one step per blank line): a blank-only text is one step
        ("\n\n", ["\n\n"]),
        ("  \n ", ["  \n "]),
        ("\n", ["\n"]),
        # carriage returns are ordinary characters
        ("A.\r\nB.", ["A.\r", "\nB."]),
    ],
)
def test_split_rules(text, steps):
    assert _steps(text) == steps
    _check_partition(text, split_steps(text))


def test_split_empty_text():
    assert split_steps("") == [0, 0]
    assert TASK.split_steps("") == [0, 0]


def test_split_offsets_strictly_increase_on_non_empty_text():
    rng = random.Random(1)
    for _ in range(2000):
        text = "".join(rng.choice(["q", "\n", " ", "\n#### ", "9"]) for _ in range(rng.randint(1, 15)))
        o = split_steps(text)
        assert all(a < b for a, b in zip(o, o[1:])), repr(text)


# ---------------------------------------------------------------- answer extraction and grading


def _row(gold: str) -> dict:
    return {"question": "q", "answer": f"Some work.\n#### {gold}"}


def test_extract_answer():
    assert extract_answer("x\n#### 18") == "18"
    assert extract_answer("x\n####   18  \n") == "18"
    assert extract_answer("#### 4\n#### 5") == "5"  # last marker wins
    assert extract_answer("no marker 18") is None
    assert extract_answer("") is None
    assert extract_answer("x ####") == ""
    assert extract_answer("####18") == "18"
    assert TASK.extract_answer("a\n#### $18") == "$18"


@pytest.mark.parametrize(
    "response, gold, correct",
    [
        ("x\n#### 72", "72", True),
        ("x\n#### 71", "72", False),
        # commas: removed from the prediction (official) and from the gold (the documented fix:
        # officially a gold "5,600" never matches)
        ("x\n#### 5600", "5,600", True),
        ("x\n#### 5,600", "5,600", True),
        ("x\n#### 5,600", "5600", True),
        ("x\n#### 1,450,000", "1,450,000", True),
        ("x\n#### 56,00", "5600", True),  # the official also just deletes commas from predictions
        ("x\n#### 5,601", "5,600", False),
        # official: an exact string match, so other spellings of the number are wrong
        ("x\n#### 18.0", "18", False),
        ("x\n#### 18.00", "18", False),
        ("x\n#### 20.00", "20", False),
        ("x\n#### 18.", "18", False),
        ("x\n#### 125.0", "125", False),
        ("x\n#### 060", "60", False),
        ("x\n#### .5", "0.5", False),
        ("x\n#### +3", "3", False),
        ("x\n#### 18.5", "18", False),
        # five hashes: split("####") leaves "# 540"
        ("x\n##### 540", "540", False),
        ("x\n######## 540", "540", True),
        # negatives
        ("x\n#### -9", "-9", True),
        ("x\n#### -9.0", "-9", False),
        ("x\n#### 9", "-9", False),
        ("x\n#### -9", "9", False),
        # case and surrounding whitespace do not matter; anything else does
        ("x\n####   18  \n", "18", True),
        ("x\n#### ABC", "abc", True),
        ("x\n#### $18", "18", False),
        ("x\n#### 18 apples", "18", False),
        ("x\n#### 18%", "18", False),
        ("x\n#### 1e3", "1000", False),
        ("x\n#### 18\nThe answer is 18.", "18", False),
        # missing, empty, several markers
        ("The answer is 18.", "18", False),
        ("", "18", False),
        ("x\n####", "18", False),
        ("x\n#### ", "18", False),
        ("x\n#### 5\n#### 18", "18", True),
        ("x\n#### 18\n#### 5", "18", False),
        ("#### 18", "18", True),
        ("x####18", "18", True),
    ],
)
def test_grading(response, gold, correct):
    row = _row(gold)
    assert TASK.is_correct(response, row) is correct
    assert TASK.reward(response, row) == (1.0 if correct else 0.0)


def test_grading_equals_official_except_comma_golds():
    """On random strings the verdict is the official one, except that a gold with a comma can be
    matched (the documented fix)."""

    def official(pred: str, gold: str) -> bool:
        return pred.strip().replace(",", "").lower() == gold.strip().lower()

    rng = random.Random(2)
    alphabet = ["1", "2", "0", ",", ".", "-", "+", "$", " ", "a", "A", "e", "#"]
    for _ in range(5000):
        pred = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
        gold = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))).replace("#", "")
        expected = official(pred, gold) or official(pred, gold.replace(",", ""))
        assert answers_match(pred, gold) is expected, (pred, gold)
        response = "x\n#### " + pred
        expected_response = official(response.split("####")[-1], gold.replace(",", ""))
        assert TASK.is_correct(response, _row(gold)) is (expected_response and bool(gold.strip())), (pred, gold)


@pytest.mark.parametrize(
    "response, gold, correct",
    [
        ("x\n#### 72", "72", True),
        ("x\n#### 18.0", "18", True),
        ("x\n#### 18.", "18", True),
        ("x\n#### 20.00", "20", True),
        ("x\n#### 5600", "5,600", True),
        ("x\n#### 5,600", "5600", True),
        ("x\n#### $18", "18", True),
        ("x\n#### 71", "72", False),
        ("x\n#### 1.5", "3/2", True),
        ("no marker 72", "72", False),
        ("x\n####", "72", False),
    ],
)
def test_math_verify_mode(response, gold, correct):
    """`grading_mode="math_verify"`: the extracted answer and the gold compare numerically."""
    task = get_task("gsm8k", grading_mode="math_verify")
    assert task.grade_many([response], [_row(gold)]) == [correct]
    assert task.is_correct(response, _row(gold)) is correct


def test_grading_mode_is_checked():
    with pytest.raises(ValueError, match="grading_mode"):
        get_task("gsm8k", grading_mode="lenient")
    assert get_task("arithmetic", grading_mode="math_verify").grading_mode == "math_verify"


def test_is_correct_never_raises():
    row = _row("18")
    assert TASK.is_correct(None, row) is False  # type: ignore[arg-type]
    assert TASK.is_correct("#### 18", {"question": "q"}) is False
    assert TASK.is_correct("#### 18", {"question": "q", "answer": "no marker"}) is False
    assert TASK.is_correct("#### 18", {"question": "q", "answer": None}) is False
    with pytest.raises(ValueError, match="####"):
        TASK.gold_answer({"question": "q", "answer": "no marker"})


def test_grade_many_and_rewards_many():
    rows = [_row("1"), _row("2"), _row("3")]
    responses = ["#### 1", "#### 3", "nothing"]
    assert TASK.grade_many(responses, rows) == [True, False, False]
    assert TASK.rewards_many(responses, rows) == [1.0, 0.0, 0.0]


def test_validate_row():
    TASK.validate_row({"question": "q", "answer": "w\n#### 3"})
    with pytest.raises(ValueError, match="'answer'"):
        TASK.validate_row({"question": "q", "answer": "w 3"})
    with pytest.raises(ValueError, match="empty final answer"):
        TASK.validate_row({"question": "q", "answer": "w\n####  "})


# ---------------------------------------------------------------- registry


def test_get_task():
    task = get_task("gsm8k")
    assert isinstance(task, GSM8KTask) and isinstance(task, Task)
    assert task.name == "gsm8k" and task.query_field == "question"
    assert task.required_fields == ("question", "answer")
    assert get_task("gsm8k", remove_calculator=False).remove_calculator is False
    assert set(TASK_NAMES) >= {"gsm8k", "math"}
    assert STOP_STRINGS == ("\n\n\nProblem:",)
    with pytest.raises(ValueError, match="gsm8k.*math"):
        get_task("gsm9k")
    with pytest.raises(TypeError):
        get_task("gsm8k", no_such_option=1)
