"""The official repository's data files as `data.source` (HF DatasetDicts saved with
`save_to_disk`, as McGill-NLP/VinePPO's `scripts/download_and_prepare_dataset.sh` unpacks them into
`data/gsm8k` and `data/math`; read by `DatasetDict.load_from_disk` in its `Task._load_data_source`).
The fixtures are written here in that format, in tmp; no data file is committed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import read_jsonl
from vineppo.data import DataError, load_rows, official_dir


def _official_dict(root: Path, task: str, splits: dict[str, list[dict]]) -> Path:
    """`root/<task>/` in the official format: DatasetDict.save_to_disk with an `_treetune__idx` column."""
    import datasets

    out = root / task
    datasets.DatasetDict({
        name: datasets.Dataset.from_list([{**r, "_treetune__idx": i} for i, r in enumerate(rows)])
        for name, rows in splits.items()
    }).save_to_disk(str(out))
    return out


@pytest.fixture(scope="module")
def gsm8k_splits(shared_data_dir):
    rows = read_jsonl(shared_data_dir / "gsm8k" / "train.jsonl", 14)
    return {"train": rows[:8], "validation": rows[8:11], "test": rows[11:14]}


def test_official_gsm8k_splits_are_read_as_shipped(tmp_path, gsm8k_splits):
    d = _official_dict(tmp_path, "gsm8k", gsm8k_splits)
    assert official_dir(tmp_path, "gsm8k") == d and official_dir(d, "gsm8k") == d  # data/ root or the task dir
    for source in (d, tmp_path):
        for split, rows in gsm8k_splits.items():
            got = load_rows("gsm8k", split, str(source), validation_size=1)  # no carve: the file's split
            assert [r["question"] for r in got] == [r["question"] for r in rows]
            assert [r["_treetune__idx"] for r in got] == list(range(len(rows)))


def test_official_math_list_solution_is_joined(tmp_path):
    rows = [{"problem": "What is $1+1$?", "solution": ["We add.", "So it is $\\boxed{2}$."], "answer": "2"}]
    d = _official_dict(tmp_path, "math", {"train": rows, "validation": rows, "test": rows})
    (row,) = load_rows("math", "test", str(d))
    assert row["solution"] == "We add.\nSo it is $\\boxed{2}$."


def test_official_data_errors_name_the_split_and_row(tmp_path, gsm8k_splits):
    d = _official_dict(tmp_path / "a", "gsm8k", {"train": gsm8k_splits["train"], "test": gsm8k_splits["test"]})
    with pytest.raises(DataError, match=r"no 'validation' split; the official data has: train, test"):
        load_rows("gsm8k", "validation", str(d))
    bad = [dict(gsm8k_splits["train"][0]), {**gsm8k_splits["train"][1], "answer": "no final answer"}]
    d = _official_dict(tmp_path / "b", "gsm8k", {"train": bad, "validation": bad, "test": bad})
    with pytest.raises(DataError, match=r"official DatasetDict\), split 'train', row index 1: .*'answer'"):
        load_rows("gsm8k", "train", str(d))


def test_jsonl_directory_with_validation_file_uses_it(tmp_path, gsm8k_splits):
    for split, rows in gsm8k_splits.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for split, rows in gsm8k_splits.items():
        assert load_rows("gsm8k", split, str(tmp_path)) == rows


def test_training_on_official_files_sees_exactly_their_rows(tmp_path, gsm8k_splits, tiny_model_dir, one_torch_thread):
    """Done-when: one iteration with `data.source` = the official-format fixture trains on its train rows."""
    from transformers import AutoTokenizer

    from vineppo.config import load_config
    from vineppo.loop import train

    _official_dict(tmp_path / "data", "gsm8k", gsm8k_splits)
    cfg = load_config(None, [
        "algorithm=grpo", f"model.name_or_path={tiny_model_dir}", "model.gradient_checkpointing=false",
        "data.task=gsm8k", f"data.source={tmp_path / 'data'}", "sampling.max_new_tokens=8",
        "sampling.max_sequence_length=512", "episodes.questions_per_iteration=8", "episodes.samples_per_question=2",
        "ppo.minibatch_size=16", "ppo.micro_batch_size=8", "iterations=1", "save_every=1", "engine.backend=hf",
        "logging.progress=false", "logging.dump_episodes=true", "seed=3"])
    run = train(cfg, tmp_path / "run").run_dir
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    dumped = [json.loads(l) for l in (run / "episodes" / "iter_000001.rank0.jsonl").read_text().splitlines()]
    prefix, suffix = "[MATH_TASK] Problem:\n", "\n\nSolution:"
    seen = {tok.decode(e["prompt_ids"], skip_special_tokens=True).removeprefix(prefix).removesuffix(suffix)
            for e in dumped}
    assert seen == {r["question"].strip() for r in gsm8k_splits["train"]}
    assert len(dumped) == 16
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["train/optimizer_steps"] == 2  # 2 epochs x 1 minibatch
