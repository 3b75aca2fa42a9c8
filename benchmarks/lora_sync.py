"""LoRA policy -> vLLM engine: merged weights pushed in place vs. adapter only (vLLM LoRA).

One process, the tiny local Llama (float32) with a PEFT LoRA policy (q/k/v/o, rank 8) built by the
real `Trainer`. For each path: the median sync time over several "training steps" (random adapter
updates), then the time of one rollout batch (prompts x samples, sampled) with that engine. Before
timing, both engines' greedy output is checked against the merged model under transformers.

Usage: python benchmarks/lora_sync.py [--repeats 5] [--prompts 32] [--samples 4] [--tokens 64]
Last line: ratio (adapter sync + rollout) / (merged sync + rollout); > 1 means merged is faster.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks._common import build_tiny, gsm8k_rows  # noqa: E402


def perturb_adapter(model, gen: torch.Generator) -> None:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def merged_greedy(trainer, prompts, max_new_tokens, eos_id) -> list[list[int]]:
    merged = copy.deepcopy(trainer.unwrapped_policy()).merge_and_unload().eval()
    out = []
    for p in prompts:
        ids = merged.generate(torch.tensor([p]), do_sample=False, max_new_tokens=max_new_tokens,
                              pad_token_id=eos_id, eos_token_id=eos_id)[0, len(p):].tolist()
        out.append(ids[: ids.index(eos_id)] if eos_id in ids else ids)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()

    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from vineppo.config import load_config
    from vineppo.engine import SamplingParams
    from vineppo.engine.vllm import VLLMEngine
    from vineppo.lora_sync import PolicySync, vllm_lora_engine_kwargs
    from vineppo.tokens import encode_prompt
    from vineppo.trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="vineppo-bench-") as tmp:
        model_dir = build_tiny(Path(tmp) / "model")
        tok = AutoTokenizer.from_pretrained(model_dir)
        cfg = load_config(None, [f"model.name_or_path={model_dir}", "model.dtype=float32",
                                 "model.gradient_checkpointing=false", "model.lora.r=8"])
        trainer = Trainer(cfg, Accelerator(cpu=True), tok, progress=False)
        policy = trainer.unwrapped_policy()
        gen = torch.Generator().manual_seed(0)
        rows = gsm8k_rows("test", args.prompts)
        prompts = [encode_prompt(tok, "[MATH_TASK] Problem:\n" + r["question"] + "\n\nSolution:") for r in rows]
        greedy = SamplingParams(temperature=0.0, max_new_tokens=16)
        sampled = SamplingParams(n=args.samples, temperature=0.6, top_p=0.9, max_new_tokens=args.tokens)

        results = {}
        for mode in ("merged", "adapter"):
            extra = vllm_lora_engine_kwargs(cfg.model.lora) if mode == "adapter" else {}
            engine = VLLMEngine(model_dir, tok, dtype="float32", seed=0, progress=False, **extra)
            sync = PolicySync(adapter=mode == "adapter")
            gen.manual_seed(0)
            syncs = []
            for _ in range(args.repeats):
                perturb_adapter(policy, gen)
                t0 = time.perf_counter()
                sync.push(engine, trainer)
                syncs.append(time.perf_counter() - t0)
            got = [c[0].token_ids for c in engine.generate(prompts[:8], greedy)]
            ref = merged_greedy(trainer, prompts[:8], 16, tok.eos_token_id)
            if got != ref:
                raise SystemExit(f"{mode}: engine greedy output differs from the merged model's")
            engine.generate(prompts[:4], sampled)  # warm-up
            t0 = time.perf_counter()
            outs = engine.generate(prompts, sampled)
            gen_s = time.perf_counter() - t0
            n_tok = sum(len(c.token_ids) for o in outs for c in o)
            results[mode] = {"sync": statistics.median(syncs), "generate": gen_s, "tokens": n_tok}
            print(f"{mode:8s}: sync {1000 * results[mode]['sync']:.1f} ms (median of {args.repeats}), "
                  f"rollout {gen_s:.2f} s for {n_tok} tokens ({n_tok / gen_s:.0f} tok/s); greedy == merged model",
                  flush=True)
            sync.close()
            engine.close()

        m, a = results["merged"], results["adapter"]
        # Per generated token, so a different number of sampled tokens does not skew the comparison.
        m_cost = m["sync"] + m["generate"] * (m["tokens"] and a["tokens"] / m["tokens"])
        a_cost = a["sync"] + a["generate"]
        print(f"sync ratio adapter/merged: {a['sync'] / m['sync']:.2f}; "
              f"tokens/s ratio adapter/merged: {(a['tokens'] / a['generate']) / (m['tokens'] / m['generate']):.2f}")
        print(f"ratio (adapter sync + rollout) / (merged sync + rollout): {a_cost / m_cost:.2f}")


if __name__ == "__main__":
    main()
