"""Rollout throughput: the VinePPO MC phase through VLLMEngine vs. a plain `llm.generate`.

1. Rollouts: Q GSM8K questions x N samples (token-id prompts).
2. MC states: each response cut every S tokens (stand-in for reasoning-step boundaries; the tiny
   random model writes no real steps), prompt + response[:k], deduplicated, ordered by question.
3. MC phase: all unique states in ONE `engine.generate` call with n=K (as `vineppo.mc.estimate_mc_values` does).
4. Baseline: the same token-id prompts through the same `vllm.LLM` with a plain `llm.generate`
   (same n, temperature, max_tokens, no detokenisation). The prefix cache is reset before every timed run; runs
   alternate and the best of R is kept for each side.

Usage: python benchmarks/rollout.py [--questions 16 --samples 4 --k 3 --stride 8 --max-new 48]
Prints the prefix-cache hit rate of the MC phase; last line: MC tokens/s as a share (%) of the
plain llm.generate tokens/s (target >= 80).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import build_tiny, gsm8k_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--stride", type=int, default=8, help="tokens between MC states")
    ap.add_argument("--max-new", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block-size", type=int, default=None, help="KV block size (CPU default 128)")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from vineppo.engine import SamplingParams
    from vineppo.engine.vllm import VLLMEngine, _torch_threads
    from vineppo.tokens import encode_prompt

    with tempfile.TemporaryDirectory(prefix="vineppo-bench-") as tmp:
        model_dir = build_tiny(Path(tmp) / "model")
        tok = AutoTokenizer.from_pretrained(model_dir)
        engine = VLLMEngine(model_dir, tok, dtype="float32", progress=False, block_size=args.block_size)
        import vllm

        questions = [encode_prompt(tok, r["question"]) for r in gsm8k_rows("test", args.questions)]
        rollouts = engine.generate(questions, SamplingParams(n=args.samples, temperature=args.temperature,
                                                             max_new_tokens=args.max_new, seed=0), desc="rollouts")
        seen, states = set(), []
        for q, row in zip(questions, rollouts):
            for c in row:
                for k in range(0, len(c.token_ids), args.stride):
                    s = tuple(q + c.token_ids[:k])
                    if s not in seen:
                        seen.add(s)
                        states.append(list(s))
        mc = SamplingParams(n=args.k, temperature=args.temperature, max_new_tokens=args.max_new)
        # Same request as the engine sends (no detokenisation: the engine re-decodes with its tokenizer).
        plain = vllm.SamplingParams(n=args.k, temperature=args.temperature, max_tokens=args.max_new, detokenize=False)
        inputs = [{"prompt_token_ids": s} for s in states]

        def run_engine():
            engine.llm.reset_prefix_cache()
            engine.stats.reset()
            engine.generate(states, mc, desc="mc")
            snap = engine.stats.reset()
            return snap.generated_tokens / snap.seconds, snap.extra["prefix_cache_hit_rate"]

        def run_plain():
            engine.llm.reset_prefix_cache()
            with _torch_threads(engine.cpu_threads):  # same thread setting as the engine
                t0 = time.perf_counter()
                outs = engine.llm.generate(inputs, plain, use_tqdm=False)
                dt = time.perf_counter() - t0
            return sum(len(c.token_ids) for o in outs for c in o.outputs) / dt

        run_plain()  # warm-up
        eng_best, plain_best, hit = 0.0, 0.0, 0.0
        for _ in range(args.repeats):
            plain_best = max(plain_best, run_plain())
            rate, hit = run_engine()
            eng_best = max(eng_best, rate)
        engine.close()

    avg_len = sum(len(s) for s in states) / len(states)
    print(f"vLLM {vllm.__version__}; {len(questions)} questions x {args.samples} rollouts -> {len(states)} unique MC "
          f"states (avg {avg_len:.0f} tokens), K={args.k}, <= {args.max_new} new tokens, T={args.temperature}")
    print(f"plain llm.generate: {plain_best:.0f} tok/s; VLLMEngine MC phase: {eng_best:.0f} tok/s")
    print(f"MC phase prefix-cache hit rate: {100 * hit:.1f} %")
    print(f"MC phase tokens/s as a share of plain llm.generate (%): {100 * eng_best / plain_best:.1f}")


if __name__ == "__main__":
    main()
