"""Per-phase wall-time shares of VinePPO and PPO iterations (generation, MC, log-probs, training, sync).

Runs `vineppo train` for a few iterations of the tiny GSM8K configs and reads metrics.jsonl.
The last number printed is VinePPO's MC share of the iteration.

    python benchmarks/phases.py [--iterations 2] [key=value overrides for both runs]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("generate", "mc", "logprobs", "train", "sync")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from vineppo.config import load_config
    from vineppo.loop import train

    shares = {}
    with tempfile.TemporaryDirectory() as tmp:
        for algo in ("vineppo", "ppo"):
            cfg = load_config(REPO / "configs" / "tiny" / f"gsm8k_{algo}.yaml",
                              [f"iterations={args.iterations}", f"save_every={args.iterations}",
                               "logging.progress=false", *args.overrides])
            res = train(cfg, Path(tmp) / algo)
            rows = [json.loads(l) for l in open(res.run_dir / "metrics.jsonl")]
            total = sum(r["seconds"] for r in rows)
            shares[algo] = {p: sum(r.get(f"{p}/seconds", 0.0) for r in rows) / total for p in PHASES}
            shares[algo]["seconds_per_iteration"] = total / len(rows)
    for algo, s in shares.items():
        print(f"{algo:8s} " + "  ".join(f"{p} {s[p]:6.1%}" for p in PHASES)
              + f"  ({s['seconds_per_iteration']:.1f} s/iteration)")
    ratio = shares["vineppo"]["seconds_per_iteration"] / shares["ppo"]["seconds_per_iteration"]
    print(f"VinePPO / PPO seconds per iteration: {ratio:.2f}")
    print(f"VinePPO MC share of the iteration: {shares['vineppo']['mc']:.3f}")


if __name__ == "__main__":
    main()
