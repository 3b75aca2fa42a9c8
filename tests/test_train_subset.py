"""`vineppo eval --split train`: the seeded subset of train rows (a pure function of seed and
question texts), its default sizes, and the CLI writing checkpoints/iter_N/eval/train/."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from vineppo.data import TRAIN_SUBSET_SIZES, load_rows, split_validation, train_subset

ROOT = Path(__file__).resolve().parents[1]


def _rows(n: int) -> list[dict]:
    return [{"question": f"q{i}", "answer": str(i)} for i in range(n)]


def test_train_subset_by_its_definition():
    """The subset is the `size` rows with the smallest sha256("train-subset" NUL seed NUL question),
    listed in file order (computed here from the definition, row by row)."""
    rows = _rows(6)
    digest = {r["question"]: hashlib.sha256(f"train-subset\x0042\x00{r['question']}".encode()).hexdigest()
              for r in rows}
    smallest = sorted(digest, key=digest.get)[:3]
    expected = [r for r in rows if r["question"] in smallest]
    assert train_subset(rows, 3, key_field="question", seed=42) == expected
    other = {r["question"]: hashlib.sha256(f"train-subset\x007\x00{r['question']}".encode()).hexdigest()
             for r in rows}
    assert [r["question"] for r in train_subset(rows, 3, key_field="question", seed=7)] == [
        q for q in digest if q in sorted(other, key=other.get)[:3]]


def test_train_subset_same_seed_same_rows_any_order_capped():
    rows = _rows(200)
    a = train_subset(rows, 20, key_field="question", seed=42)
    assert len(a) == 20 and a == train_subset(rows, 20, key_field="question", seed=42)
    # file order kept
    assert [int(r["answer"]) for r in a] == sorted(int(r["answer"]) for r in a)
    # the same rows whatever order the file lists them in (a shard, a hub copy, ...)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    b = train_subset(shuffled, 20, key_field="question", seed=42)
    assert sorted(r["question"] for r in b) == sorted(r["question"] for r in a)
    # another seed, other rows
    assert train_subset(rows, 20, key_field="question", seed=43) != a
    # a larger subset of the same seed contains the smaller one
    assert {r["question"] for r in a} < {r["question"] for r in train_subset(rows, 50, key_field="question")}
    # capped by the split: every row, in file order
    assert train_subset(rows[:5], 500, key_field="question") == rows[:5]
    with pytest.raises(ValueError, match=">= 1"):
        train_subset(rows, 0, key_field="question")


def test_train_subset_is_not_the_front_of_the_file():
    """Drawn over the whole split: of 1,000 rows, a 500-row subset takes about half of each half."""
    rows = _rows(1000)
    first_half = sum(int(r["answer"]) < 500 for r in train_subset(rows, 500, key_field="question"))
    assert 200 < first_half < 300


def test_train_subset_same_in_every_process():
    """Processes with other hash seeds (PYTHONHASHSEED) pick the same rows as this one."""
    code = ("import json; from vineppo.data import train_subset; "
            "rows = [{'question': f'q{i}'} for i in range(300)]; "
            "print(json.dumps([r['question'] for r in train_subset(rows, 30, key_field='question', seed=5)]))")
    here = [r["question"] for r in train_subset([{"question": f"q{i}"} for i in range(300)], 30,
                                                 key_field="question", seed=5)]
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == here


def test_eval_rows_of_the_train_split(shared_data_dir):
    """GSM8K: the official subset size (373) of the rows training samples from (train minus the
    validation carve), disjoint from validation; --train-subset N takes a prefix of the same order."""
    from vineppo.evaluate import data_spec, load_eval_rows

    cfg = {"data": {"task": "gsm8k", "source": str(shared_data_dir / "gsm8k"), "validation_size": 100}}
    spec = data_spec(cfg, task=None, source=None, where="test")
    rows = load_eval_rows(spec, "train")
    assert len(rows) == TRAIN_SUBSET_SIZES["gsm8k"] == 373
    train = load_rows("gsm8k", "train", shared_data_dir / "gsm8k", validation_size=100)
    validation = load_rows("gsm8k", "validation", shared_data_dir / "gsm8k", validation_size=100)
    questions = {r["question"] for r in rows}
    assert questions <= {r["question"] for r in train}
    assert not questions & {r["question"] for r in validation}
    small = load_eval_rows(data_spec(cfg, task=None, source=None, where="test", train_subset=40), "train")
    assert len(small) == 40 and {r["question"] for r in small} < questions
    other = load_eval_rows(data_spec(cfg, task=None, source=None, where="test", train_subset=40,
                                     train_subset_seed=1), "train")
    assert {r["question"] for r in other} != {r["question"] for r in small}
    # the carve and the subset are salted apart: the subset is not the carve's next rows
    _, next_rows = split_validation(train, 40, key_field="question", seed=42)
    assert {r["question"] for r in next_rows} != {r["question"] for r in small}


def test_eval_cli_train_split(tiny_model_dir, shared_data_dir, tmp_path, capsys, caplog, one_torch_thread):
    """`vineppo eval --run RUN --split train` writes iter_N/eval/train/results.json with the subset
    it used; a different subset is a different setting (kept, with a warning, unless --force)."""
    from test_evaluate import _fake_run

    from vineppo.cli import main

    run = _fake_run(tmp_path, tiny_model_dir, shared_data_dir / "gsm8k", [5])
    args = ["--n-samples", "2", "--max-new-tokens", "4", "--backend", "hf"]
    assert main(["eval", "--run", str(run), "--split", "train", "test", "--train-subset", "3", "--max-problems", "2",
                 *args]) == 0
    out = capsys.readouterr().out
    assert "iter_000005 train: pass@1" in out
    res = json.loads((run / "checkpoints" / "iter_000005" / "eval" / "train" / "results.json").read_text())
    assert res["split"] == "train" and res["num_problems"] == 2  # --max-problems: the first 2 of the 3
    assert res["train_subset"] == 3 and res["train_subset_seed"] == 42
    test = json.loads((run / "checkpoints" / "iter_000005" / "eval" / "test" / "results.json").read_text())
    assert test["train_subset"] is None and test["train_subset_seed"] is None
    assert main(["eval", "--run", str(run), "--split", "train", "test", "--train-subset", "3", "--max-problems", "2",
                 *args]) == 0
    assert "evaluated 0" in capsys.readouterr().out
    with caplog.at_level(logging.WARNING, logger="vineppo.evaluate"):
        assert main(["eval", "--run", str(run), "--split", "train", "--train-subset", "4", "--max-problems", "2",
                     *args]) == 0
    assert "train_subset: 3 != 4" in caplog.text
    assert main(["eval", "--run", str(run), "--split", "train", "--train-subset", "0", *args]) == 2
    assert "--train-subset" in capsys.readouterr().err
    # one checkpoint: the same subset, another seed
    out = tmp_path / "one"
    assert main(["eval", "--checkpoint", str(run / "checkpoints" / "iter_000005"), "--split", "train",
                 "--train-subset", "2", "--train-subset-seed", "7", "--output-dir", str(out), *args]) == 0
    res = json.loads((out / "train" / "results.json").read_text())
    assert (res["num_problems"], res["train_subset"], res["train_subset_seed"]) == (2, 2, 7)
