"""The demo's data: the synthetic arithmetic task's train/test problems written to DIR/data as
JSONL, the validation carve (as training carves it), and the splits every checkpoint is evaluated on."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vineppo.config import TrainConfig
from vineppo.demo.config import TASK, DemoSettings, _say


def _write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)




@dataclass
class DemoSplits:
    data_dir: Path
    #: every generated train problem (the validation carve included)
    train_rows: list[dict]
    test_rows: list[dict]
    #: the train rows SFT and RL use (train minus the validation carve)
    rl_rows: list[dict]
    #: the validation carve (SFT stop check, checkpoint selection)
    val_rows: list[dict]
    #: split name -> rows every checkpoint is evaluated on
    splits: dict[str, list[dict]]


def prepare_data(demo: DemoSettings, base: TrainConfig, out: Path) -> DemoSplits:
    """Generate the problems, write DIR/data/{train,test}.jsonl, carve validation from train."""
    from vineppo.data import load_rows
    from vineppo.tasks.arithmetic import make_splits

    train_rows, test_rows = make_splits(demo.data.train_problems, demo.data.test_problems, demo.data.seed)
    data_dir = out / "data"
    _write_jsonl(data_dir / "train.jsonl", train_rows)
    _write_jsonl(data_dir / "test.jsonl", test_rows)
    vsize = base.data.validation_size or 0
    rl_rows = load_rows(TASK, "train", data_dir, validation_size=vsize, seed=base.data.validation_seed)
    val_rows = (load_rows(TASK, "validation", data_dir, validation_size=vsize, seed=base.data.validation_seed)
                if vsize > 0 else [])
    splits = {"test": test_rows}
    if demo.eval.validation and val_rows:
        splits["validation"] = val_rows
    _say(f"data: {len(train_rows)} train problems ({vsize} held out as validation), {len(test_rows)} test "
         f"problems, disjoint by computation -> {data_dir}")
    return DemoSplits(data_dir, train_rows, test_rows, rl_rows, val_rows, splits)
