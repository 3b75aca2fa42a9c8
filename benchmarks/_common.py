"""Helpers shared by the benchmarks: real GSM8K rows and tiny local models (nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def gsm8k_rows(split: str = "train", limit: int = 500) -> list[dict]:
    """Rows from ../shared/data/gsm8k if present, else synthetic arithmetic rows (offline)."""
    path = DATA / f"{split}.jsonl"
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for _, line in zip(range(limit), f)]
    return [{"question": f"Tom has {3 + i % 17} apples and buys {5 + i * 7 % 23} more. How many apples now?",
             "answer": f"Tom has {3 + i % 17} + {5 + i * 7 % 23} = {8 + i % 17 + i * 7 % 23} apples.\n"
                       f"#### {8 + i % 17 + i * 7 % 23}"} for i in range(limit)]


def build_tiny(out_dir) -> Path:
    """A tiny random-init Llama + tokenizer (vineppo.tiny) trained on 500 rows, saved to out_dir."""
    from vineppo.tiny import save_tiny

    return save_tiny(out_dir, [r["question"] + "\n" + r["answer"] for r in gsm8k_rows("train", 500)])


def sft_tiny_gsm8k(out: Path, steps: int) -> Path:
    """A tiny Llama briefly fine-tuned on short real GSM8K solutions (multi-line responses)."""
    from vineppo.sft import SFTConfig, sft
    from vineppo.tasks import get_task
    from vineppo.tiny import TinyModelConfig, build_model, build_tokenizer

    task = get_task("gsm8k")
    rows = sorted(gsm8k_rows("train", 2000), key=lambda r: len(task.gold_solution(r)))[:1000]
    tok = build_tokenizer([task.prompt(r) + task.sft_target(r) for r in rows], 640)
    model = build_model(tok, TinyModelConfig(num_layers=2))
    sft(model, tok, task, rows, SFTConfig(max_steps=steps, batch_size=16, micro_batch_size=16, lr=3e-3), out_dir=out)
    return out
