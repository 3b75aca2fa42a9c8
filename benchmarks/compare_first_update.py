"""Compare runs of one config under different strategies (DDP, FSDP2, ZeRO-2/3): the first update and the canary.

    python benchmarks/compare_first_update.py --initial MODEL_DIR --reference RUN_DDP RUN_FSDP RUN_ZERO2 ...

For each run: metrics rows, `sync/logprob_gap` of every row, whether a finite `train/value…`
metric was logged, and the policy's first update (weights of checkpoints/iter_000001 minus the
initial weights) compared with the reference run's: cosine similarity and norm ratio.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def first_update(run: Path, initial: Path):
    import torch
    from safetensors.torch import load_file

    w0 = load_file(str(initial / "model.safetensors"))
    w1 = load_file(str(run / "checkpoints" / "iter_000001" / "model.safetensors"))
    if sorted(w0) != sorted(w1):
        raise ValueError(f"{run}: checkpoint names differ from the initial model's")
    return torch.cat([(w1[k].double() - w0[k].double()).flatten() for k in sorted(w0)])


def report(runs: list[Path], initial: Path) -> list[dict]:
    import torch

    ref = first_update(runs[0], initial)
    out = []
    for run in runs:
        rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
        d = first_update(run, initial)
        value = [v for r in rows for k, v in r.items() if k.startswith("train/value") and isinstance(v, float)]
        out.append({
            "run": str(run), "iterations": [r["iteration"] for r in rows],
            "logprob_gap": [r.get("sync/logprob_gap") for r in rows],
            "finite_value_metric": bool(value) and all(math.isfinite(v) for v in value),
            "cosine": float(torch.nn.functional.cosine_similarity(d, ref, dim=0)),
            "norm_ratio": float(d.norm() / ref.norm()),
            "seconds": [round(r.get("seconds", 0.0), 1) for r in rows],
        })
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--initial", required=True, type=Path, help="the starting model directory")
    p.add_argument("runs", nargs="+", type=Path, help="run directories; the first is the reference (DDP)")
    a = p.parse_args()
    for r in report(a.runs, a.initial):
        print(json.dumps(r))


if __name__ == "__main__":
    main()
