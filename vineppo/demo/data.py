"""The demo's data: the synthetic task's train/test problems (`demo.data.task`: arithmetic, or long
chains) written to DIR/data as JSONL, the validation carve (as training carves it), the splits every
checkpoint is evaluated on, and the short-chain control's problems (DIR/control/data)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vineppo.config import TrainConfig
from vineppo.demo.config import DemoSettings, _say


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


def generate_splits(demo: DemoSettings, *, control: bool = False) -> tuple[list[dict], list[dict]]:
    """(train, test) rows of the demo's task, disjoint by computation; `control=True`: the
    short-chain control's (its own chain lengths and problem counts, the same generator seed)."""
    d = demo.data
    if d.task == "arithmetic":
        from vineppo.tasks.arithmetic import make_splits

        return make_splits(d.train_problems, d.test_problems, d.seed)
    from vineppo.tasks.chain import make_chain_splits

    if control:
        c = demo.control
        return make_chain_splits(c.train_problems, c.test_problems, d.seed, min_ops=c.min_ops, max_ops=c.max_ops)
    return make_chain_splits(d.train_problems, d.test_problems, d.seed, min_ops=d.min_ops, max_ops=d.max_ops)


def prepare_data(demo: DemoSettings, base: TrainConfig, out: Path, *, control: bool = False) -> DemoSplits:
    """Generate the problems, write DIR/data/{train,test}.jsonl, carve validation from train.
    `control=True`: the short-chain control's problems, in DIR/control/data."""
    from vineppo.data import load_rows

    task = demo.data.task
    train_rows, test_rows = generate_splits(demo, control=control)
    data_dir = out / ("control" if control else "") / "data"
    _write_jsonl(data_dir / "train.jsonl", train_rows)
    _write_jsonl(data_dir / "test.jsonl", test_rows)
    vsize = base.data.validation_size or 0
    rl_rows = load_rows(task, "train", data_dir, validation_size=vsize, seed=base.data.validation_seed)
    val_rows = (load_rows(task, "validation", data_dir, validation_size=vsize, seed=base.data.validation_seed)
                if vsize > 0 else [])
    splits = {"test": test_rows}
    if demo.eval.validation and val_rows:
        splits["validation"] = val_rows
    what = "control " if control else ""
    _say(f"{what}data ({task}): {len(train_rows)} train problems ({vsize} held out as validation), "
         f"{len(test_rows)} test problems, disjoint by computation -> {data_dir}")
    return DemoSplits(data_dir, train_rows, test_rows, rl_rows, val_rows, splits)
