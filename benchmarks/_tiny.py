"""Shared helpers for the benchmarks: a tiny local model in a temp dir, GSM8K prompts."""

from __future__ import annotations

import json
import os
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def gsm8k_rows(split: str = "train", limit: int = 500) -> list[dict]:
    """Rows from ../shared/data/gsm8k if present, else synthetic arithmetic rows (offline)."""
    path = DATA / f"{split}.jsonl"
    if path.is_file():
        rows = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                if len(rows) >= limit:
                    break
                rows.append(json.loads(line))
        return rows
    rows = []
    for i in range(limit):
        a, b = 3 + i % 17, 5 + (i * 7) % 23
        rows.append({"question": f"Tom has {a} apples and buys {b} more. How many apples does he have now?",
                     "answer": f"Tom has {a} + {b} = {a + b} apples.\n#### {a + b}"})
    return rows


def build_tiny(out_dir: str | os.PathLike) -> Path:
    from vineppo.tiny import save_tiny

    rows = gsm8k_rows("train", 500)
    return save_tiny(out_dir, [r["question"] + "\n" + r["answer"] for r in rows])
