"""vineppo.data: local JSONL loading, validation carve, row validation, prompt-length filter, hub path."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import datasets
import pytest

from vineppo import data
from vineppo.data import (
    DataError,
    PromptFilterResult,
    filter_by_prompt_length,
    last_boxed,
    load_rows,
    read_jsonl,
    split_validation,
)
from vineppo.tasks import get_task

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module", autouse=True)
def _shared_data() -> None:
    for name in ("gsm8k/train.jsonl", "gsm8k/test.jsonl", "math/train.jsonl", "math/test.jsonl"):
        if not (DATA / name).is_file():
            pytest.fail(f"shared data file missing: {DATA / name} (tests need ../shared/data beside the repo)")


def _raw(name: str) -> list[dict]:
    with (DATA / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _key(row: dict) -> str:
    return json.dumps(row, sort_keys=True)


# ---------------------------------------------------------------- real local files


def test_read_all_four_files():
    assert len(read_jsonl(DATA / "gsm8k/train.jsonl", ("question", "answer"))) == 7473
    assert len(read_jsonl(DATA / "gsm8k/test.jsonl", ("question", "answer"))) == 1319
    assert len(read_jsonl(DATA / "math/train.jsonl", ("problem", "solution"))) == 12000
    assert len(read_jsonl(DATA / "math/test.jsonl", ("problem", "solution"))) == 500


def test_load_gsm8k_local():
    src = DATA / "gsm8k"
    train, val, test = (load_rows("gsm8k", s, src) for s in ("train", "validation", "test"))
    assert (len(train), len(val), len(test)) == (7100, 373, 1319)
    assert test == _raw("gsm8k/test.jsonl")
    full = _raw("gsm8k/train.jsonl")
    assert load_rows("gsm8k", "train", src, validation_size=0) == full
    # disjoint, covering, each in file order
    assert not {_key(r) for r in train} & {_key(r) for r in val}
    assert Counter(map(_key, train + val)) == Counter(map(_key, full))
    position = {_key(r): i for i, r in enumerate(full)}
    for part in (train, val):
        idx = [position[_key(r)] for r in part]
        assert idx == sorted(idx)
    # the shared data root works too (a <task>/ folder inside it)
    assert load_rows("gsm8k", "validation", DATA) == val
    assert load_rows("gsm8k", "test", str(src)) == test


def test_load_math_local():
    src = DATA / "math"
    train, val, test = (load_rows("math", s, src) for s in ("train", "validation", "test"))
    assert (len(train), len(val), len(test)) == (11500, 500, 500)
    full = load_rows("math", "train", src, validation_size=0)
    assert len(full) == 12000
    # the two upstream rows with an empty answer load (answer is not a required field)
    assert sorted(r["unique_id"] for r in full if r["answer"] == "") == [
        "train/number_theory/7115.json",
        "train/number_theory/7117.json",
    ]
    assert not {r["unique_id"] for r in train} & {r["unique_id"] for r in val}
    assert {r["unique_id"] for r in train} | {r["unique_id"] for r in val} == {r["unique_id"] for r in full}
    assert not {r["problem"] for r in full} & {r["problem"] for r in test}


def test_validation_carve_is_deterministic_and_seeded():
    src = DATA / "gsm8k"
    a = load_rows("gsm8k", "validation", src)
    assert load_rows("gsm8k", "validation", src) == a
    assert load_rows("gsm8k", "validation", src, seed=data.DEFAULT_SPLIT_SEED) == a
    other = load_rows("gsm8k", "validation", src, seed=7)
    assert len(other) == 373 and other != a
    small = load_rows("gsm8k", "validation", src, validation_size=10)
    assert len(small) == 10
    assert len(load_rows("gsm8k", "train", src, validation_size=10)) == 7463
    # the carve follows the question text, not the row order
    full = _raw("gsm8k/train.jsonl")
    _, val_fwd = split_validation(full, 373, key_field="question")
    _, val_rev = split_validation(full[::-1], 373, key_field="question")
    assert {r["question"] for r in val_fwd} == {r["question"] for r in val_rev} == {r["question"] for r in a}


def test_bad_arguments():
    src = DATA / "gsm8k"
    with pytest.raises(ValueError, match="outside"):
        load_rows("gsm8k", "validation", src, validation_size=7474)
    with pytest.raises(ValueError, match="outside"):
        load_rows("gsm8k", "train", src, validation_size=-1)
    with pytest.raises(ValueError, match="train, validation, test"):
        load_rows("gsm8k", "dev", src)
    with pytest.raises(ValueError, match="valid names"):
        load_rows("nope", "test", src)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_rows("gsm8k", "test", DATA / "no_such_dir")
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        load_rows("gsm8k", "test", DATA.parent)


# ---------------------------------------------------------------- malformed rows


GOOD = '{"question": "Q?", "answer": "W.\\n#### 3"}'


def _write(tmp_path: Path, lines: list[str], name: str = "train.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "bad_line, field, message",
    [
        ('{"question": "Q?", "answer": "W.\\n#### 3"', None, "invalid JSON"),
        ("not json", None, "invalid JSON"),
        ('["Q?", "W.\\n#### 3"]', None, "expected a JSON object, got list"),
        ('"just a string"', None, "expected a JSON object, got str"),
        ("42", None, "expected a JSON object, got int"),
        ("null", None, "expected a JSON object, got NoneType"),
        ('{"question": "Q?"}', "answer", "required field 'answer' is missing"),
        ('{"answer": "W.\\n#### 3"}', "question", "required field 'question' is missing"),
        ('{"question": "", "answer": "W.\\n#### 3"}', "question", "required field 'question' is empty"),
        ('{"question": " \\n ", "answer": "W.\\n#### 3"}', "question", "required field 'question' is empty"),
        ('{"question": "Q?", "answer": 3}', "answer", "required field 'answer' must be a string, got int"),
        ('{"question": null, "answer": "W.\\n#### 3"}', "question", "must be a string, got NoneType"),
        ('{"question": "Q?", "answer": "W. 3"}', "answer", "field 'answer' has no '####' answer line"),
        ('{"question": "Q?", "answer": "W.\\n#### "}', "answer", "field 'answer' has an empty final answer"),
    ],
)
def test_malformed_row_names_file_line_and_field(tmp_path, bad_line, field, message):
    path = _write(tmp_path, [GOOD, GOOD, bad_line, GOOD])
    with pytest.raises(DataError) as info:
        load_rows("gsm8k", "train", tmp_path, validation_size=0)
    err = info.value
    assert isinstance(err, ValueError)
    assert str(err).startswith(f"{path}, line 3: ")
    assert message in str(err)
    assert err.line == 3
    if field is not None:
        assert f"'{field}'" in str(err)
    if "required field" in message:
        assert err.field == field


def test_blank_lines(tmp_path):
    # blank lines at the end are fine
    _write(tmp_path, [GOOD, GOOD, "", "  ", ""], "test.jsonl")
    assert len(load_rows("gsm8k", "test", tmp_path)) == 2
    # a blank line followed by a row is an error naming the blank line
    path = _write(tmp_path, [GOOD, "", GOOD], "test.jsonl")
    with pytest.raises(DataError, match=f"{path}, line 2: blank line"):
        load_rows("gsm8k", "test", tmp_path)
    # no trailing newline at all is fine
    (tmp_path / "test.jsonl").write_text(GOOD + "\n" + GOOD, encoding="utf-8")
    assert len(load_rows("gsm8k", "test", tmp_path)) == 2
    # an empty file is an empty split
    (tmp_path / "test.jsonl").write_text("", encoding="utf-8")
    assert load_rows("gsm8k", "test", tmp_path) == []


def test_encoding_errors(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"question": "\xff", "answer": "#### 1"}\n')
    with pytest.raises(DataError, match=f"{path}, line 2: not valid UTF-8"):
        load_rows("gsm8k", "test", tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\n")  # a UTF-8 BOM is tolerated
    assert load_rows("gsm8k", "test", tmp_path)[0]["question"] == "Q?"


def test_math_rows_need_problem_and_solution_only(tmp_path):
    row = {"problem": "P", "solution": "so $\\boxed{2}$", "answer": "", "subject": "Algebra", "level": None}
    _write(tmp_path, [json.dumps(row)], "test.jsonl")
    assert load_rows("math", "test", tmp_path) == [row]
    _write(tmp_path, [json.dumps({**row, "solution": ""})], "test.jsonl")
    with pytest.raises(DataError, match="line 1: required field 'solution' is empty"):
        load_rows("math", "test", tmp_path)


# ---------------------------------------------------------------- prompt-length filter


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "<s>", "</s>"])
    tok.train_from_iterator(["[MATH_TASK] Problem:\nhow many apples are there\n\nSolution:"], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="[UNK]")


def test_filter_by_prompt_length(caplog):
    tokenizer = _tokenizer()
    task = get_task("gsm8k")
    # BOS + "[" "MATH_TASK" "]" "Problem" ":" + words + "Solution" ":" = 8 + words
    rows = [{"question": " ".join(["apples"] * n), "answer": "#### 1"} for n in (1, 5, 12, 2, 13, 30)]
    assert [len(tokenizer(task.prompt(r)).input_ids) for r in rows] == [9, 13, 20, 10, 21, 38]
    with caplog.at_level(logging.INFO, logger="vineppo.data"):
        result = filter_by_prompt_length(rows, task, tokenizer, 20)
    assert isinstance(result, PromptFilterResult)
    kept, dropped = result
    assert kept == [rows[0], rows[1], rows[2], rows[3]] and dropped == 2
    assert "kept 4 of 6 rows, dropped 2" in caplog.text
    # without BOS one more token fits; tiny batches give the same answer
    assert filter_by_prompt_length(rows, task, tokenizer, 20, add_special_tokens=False).dropped == 1
    assert filter_by_prompt_length(rows, task, tokenizer, 20, batch_size=2) == result
    assert filter_by_prompt_length([], task, tokenizer, 20) == ([], 0)
    with pytest.raises(ValueError):
        filter_by_prompt_length(rows, task, tokenizer, 0)


def test_filter_real_rows():
    tokenizer = _tokenizer()
    task = get_task("gsm8k")
    rows = load_rows("gsm8k", "test", DATA / "gsm8k")
    lengths = [len(ids) for ids in tokenizer([task.prompt(r) for r in rows])["input_ids"]]
    budget = sorted(lengths)[len(lengths) // 2]
    kept, dropped = filter_by_prompt_length(rows, task, tokenizer, budget)
    assert dropped == sum(n > budget for n in lengths) > 0
    assert len(kept) + dropped == len(rows)
    assert filter_by_prompt_length(rows, task, tokenizer, max(lengths)) == (rows, 0)


# ---------------------------------------------------------------- hub path (datasets.load_dataset mocked)


def _original_math() -> dict[tuple[str, str], list[dict]]:
    """The 12,500 MATH problems in the per-subject hub layout, rebuilt from the local files."""
    by_config: dict[tuple[str, str], list[tuple[int, dict]]] = {}
    for row in _raw("math/train.jsonl") + _raw("math/test.jsonl"):
        split, config, number = row["unique_id"].split("/")
        level = "Level ?" if row["level"] is None else f"Level {row['level']}"
        hub_row = {"problem": row["problem"], "level": level, "type": row["subject"], "solution": row["solution"]}
        by_config.setdefault((config, split), []).append((int(number.removesuffix(".json")), hub_row))
    return {k: [r for _, r in sorted(v, key=lambda x: x[0])] for k, v in by_config.items()}


@pytest.fixture
def fake_hub(monkeypatch):
    calls: list[tuple] = []
    math_full = _original_math()

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        if path == "openai/gsm8k" and name == "main":
            rows = _raw(f"gsm8k/{split}.jsonl")
        elif path == "HuggingFaceH4/MATH-500" and name is None and split == "test":
            rows = _raw("math/test.jsonl")
        elif path == "EleutherAI/hendrycks_math":
            rows = math_full[(name, split)]
        else:
            raise AssertionError(f"unexpected hub request {path!r} {name!r} {split!r}")
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_gsm8k(fake_hub):
    test = load_rows("gsm8k", "test")
    assert test == _raw("gsm8k/test.jsonl")
    assert fake_hub == [("openai/gsm8k", "main", "test")]
    val = load_rows("gsm8k", "validation", "hub")
    assert fake_hub[-1] == ("openai/gsm8k", "main", "train")
    assert val == load_rows("gsm8k", "validation", DATA / "gsm8k")
    assert len(load_rows("gsm8k", "train")) == 7100


def test_hub_math(fake_hub):
    test = load_rows("math", "test")
    assert test == _raw("math/test.jsonl")
    assert fake_hub == [("HuggingFaceH4/MATH-500", None, "test")]
    full = load_rows("math", "train", validation_size=0)
    requested = {(name, split) for path, name, split in fake_hub if path == "EleutherAI/hendrycks_math"}
    assert requested == {(c, s) for c in data.MATH_FULL_CONFIGS for s in ("train", "test")}
    # MATH train = the 12,500 problems minus MATH-500, matched by problem text
    local = _raw("math/train.jsonl")
    assert len(full) == 12000
    assert Counter(r["problem"] for r in full) == Counter(r["problem"] for r in local)
    by_problem = {r["problem"]: r for r in local}
    for row in full:
        ref = by_problem[row["problem"]]
        assert (row["solution"], row["answer"], row["subject"], row["level"]) == (
            ref["solution"], ref["answer"], ref["subject"], ref["level"]
        )
        assert row["unique_id"].startswith("EleutherAI/hendrycks_math:")
    # the carve picks the same problems from either copy
    hub_val = load_rows("math", "validation")
    assert {r["problem"] for r in hub_val} == {r["problem"] for r in load_rows("math", "validation", DATA / "math")}


def test_hub_rows_are_validated(monkeypatch):
    def load_dataset(path, name=None, split=None, **kwargs):
        return datasets.Dataset.from_list([
            {"question": "Q?", "answer": "W.\n#### 1"},
            {"question": "Q?", "answer": ""},
        ])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with pytest.raises(DataError) as info:
        load_rows("gsm8k", "test")
    assert str(info.value) == (
        "hub dataset 'openai/gsm8k', config 'main', split 'test', row index 1: required field 'answer' is empty"
    )
    assert info.value.field == "answer"


def test_hub_warns_when_math500_does_not_match(monkeypatch, caplog):
    def load_dataset(path, name=None, split=None, **kwargs):
        if path == "HuggingFaceH4/MATH-500":
            return datasets.Dataset.from_list([{"problem": "not in the full set", "solution": "\\boxed{1}"}])
        return datasets.Dataset.from_list([
            {"problem": f"{name} {split}", "level": "Level 2", "type": "Algebra", "solution": "\\boxed{1}"}
        ])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    with caplog.at_level(logging.WARNING, logger="vineppo.data"):
        rows = load_rows("math", "train", validation_size=0)
    assert len(rows) == 14 and rows[0]["level"] == 2
    assert "removed 0 of 14 problems for MATH-500's 1" in caplog.text


def test_no_hub_source_for_other_tasks(monkeypatch):
    monkeypatch.setattr(data, "_hub", lambda *a: pytest.fail("must not reach the hub"))
    with pytest.raises(ValueError, match="no hub source"):
        data._hub_split("arithmetic", get_task("gsm8k"), "train")


def test_last_boxed():
    assert last_boxed("so $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{1} or \\boxed{2}") == "2"
    assert last_boxed("is $\\boxed 5$.") == "5"
    assert last_boxed("\\boxed{}") == ""
    assert last_boxed("no box") == ""
    assert last_boxed("\\boxed{unclosed") == ""
