"""How much VinePPO's prefix dedup saves: naive MC states vs unique token-prefix states.

64 real GSM8K train questions × 8 samples from a tiny model (briefly fine-tuned on GSM8K so its
responses have several lines = several steps), GSM8K step splitting, states at step starts.
Prints naive states, unique states, engine calls per iteration; the last number is the ratio.

    python benchmarks/mc_dedup.py [--model DIR] [--sft-steps 80] [--backend auto|hf|vllm]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import gsm8k_rows, sft_tiny_gsm8k  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model dir (default: build + briefly fine-tune a tiny one)")
    ap.add_argument("--sft-steps", type=int, default=80)
    ap.add_argument("--backend", default="auto", choices=["auto", "hf", "vllm"])
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from vineppo.config import EngineConfig
    from vineppo.engine.factory import make_engine
    from vineppo.episodes import generate_episodes
    from vineppo.tasks import get_task
    from vineppo.mc import build_mc_requests

    tmp = tempfile.TemporaryDirectory()
    model_dir = Path(args.model) if args.model else sft_tiny_gsm8k(Path(tmp.name) / "m", args.sft_steps)
    tok = AutoTokenizer.from_pretrained(model_dir)
    task = get_task("gsm8k")
    rows = gsm8k_rows("train", args.questions)
    engine = make_engine(EngineConfig(backend=args.backend, kv_cache_memory_bytes=256 << 20),
                         model_path=str(model_dir), tokenizer=tok, seed=0)
    episodes, _ = generate_episodes(engine, task, tok, rows, list(range(len(rows))), samples_per_question=args.samples,
                                    temperature=0.6, top_p=0.9, max_new_tokens=128, max_sequence_length=1024,
                                    stop=["\n\n\nProblem:"], seed=0)
    for cap, name in ((25, "GSM8K cap 25"), (None, "no cap")):
        reqs, _, naive = build_mc_requests(episodes, cap)
        print(f"{name}: {len(episodes)} episodes, mean steps {sum(e.num_steps for e in episodes) / len(episodes):.2f}, "
              f"naive states {naive}, unique states {len(reqs)}")
    print("engine calls per VinePPO iteration: 2 (one for the episodes, one n=K call for all unique MC states)")
    reqs, _, naive = build_mc_requests(episodes, 25)
    print(f"naive / unique MC states: {naive / len(reqs):.2f}")
    engine.close()


if __name__ == "__main__":
    main()
