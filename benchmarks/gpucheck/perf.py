"""Memory and speed of a ~0.5B model at the paper's lengths, next to `vineppo plan`'s prediction.

A random-init Llama of 557,774,080 parameters (`half_b_llama_config`, built on the GPU and saved
locally: nothing is downloaded) trained by the Trainer under the paper config
configs/paper/rho1b_math_vineppo.yaml (micro-batch 16 × 2048 tokens, one GPU). Measured:

- `torch.cuda.memory_allocated` after the trainer is built (resident) and the allocator peak of the
  log-prob pass and of the training step (`torch.cuda.max_memory_allocated`, reset between them),
  each against the plan's phase without what lies outside torch's allocator (CUDA context, the
  engine); the plan is an upper estimate, so a phase fails only when the measurement exceeds the
  plan by more than `PLAN_SLACK`;
- the engine: generate and MC-style tokens/s, the streamed push's seconds; with vLLM also the GPU
  memory in use with the engine awake against the plan's rollout phase;
- the trainer's log-prob and train tokens/s.
"""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path

from benchmarks.gpucheck.runner import FAIL, PASS
from benchmarks.gpucheck.table import PERF_CONFIG, PerfCheck, perf_overrides

#: a measured phase may exceed the plan's by this fraction before the check fails (the plan is an
#: upper estimate: allocator rounding and cuBLAS workspaces are not in it)
PLAN_SLACK = 0.10
#: parts of a plan phase that torch's allocator counts in the trainer's process (by name prefix):
#: the trained models' states, the reference, a pass's activations and logits; not the CUDA context,
#: the engine's share or other memory outside the allocator
ALLOCATOR_PARTS = ("policy_", "critic_", "reference", "forward", "activations", "logits")
GIB = 2**30


def half_b_llama_config(vocab_size: int = 32000, max_position_embeddings: int = 4096, **token_ids):
    """A ~0.56B Llama, 557,774,080 parameters (hidden 1280, 24 layers, 20 heads, MLP 3456, vocab 32000, untied)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=1280, intermediate_size=3456, num_hidden_layers=24,
                       num_attention_heads=20, num_key_value_heads=20, max_position_embeddings=max_position_embeddings,
                       tie_word_embeddings=False, **token_ids)


def rehearsal_llama_config(**token_ids):
    """The CPU rehearsal's stand-in (same code path, a size a CPU runs in seconds)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                       tie_word_embeddings=False, **token_ids)


def planned_allocator_bytes(plan) -> dict[str, int]:
    """The plan's phases as torch's allocator in the trainer's process would count them: resident
    (the rollout phase without the engine and the CUDA context), the log-prob pass, the training step."""
    phases = {p.name: p.parts for p in plan.phases}
    alloc = lambda parts: sum(v for k, v in parts.items() if k.startswith(ALLOCATOR_PARTS))  # noqa: E731
    return {"resident": alloc(phases["rollout"]), "logprobs": alloc(phases["logprobs"]), "train": alloc(phases["train"])}


def compare_with_plan(measured: dict[str, int], planned: dict[str, int], slack: float = PLAN_SLACK
                      ) -> list[tuple[str, bool, str]]:
    """Per measured phase: (phase, ok, detail); ok iff measured <= planned × (1 + slack) (the plan
    must not under-estimate; it may over-estimate, and the ratio says by how much)."""
    out = []
    for phase, m in measured.items():
        p = planned[phase]
        ok = m <= p * (1 + slack)
        ratio = p / m if m else float("inf")
        out.append((phase, ok, f"{phase} {m / GIB:.2f} GiB (plan {p / GIB:.2f}, plan/measured {ratio:.2f})"))
    return out


def _episodes(tok, n: int, length: int, prompt_len: int, vocab: int, seed: int = 0):
    import torch

    from vineppo.episodes import Episode

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt = torch.randint(3, vocab, (prompt_len,), generator=g).tolist()
        resp = torch.randint(3, vocab, (length - prompt_len,), generator=g).tolist()
        e = Episode(question_index=i, sample_index=0, prompt_ids=prompt, response_ids=resp, response_text="",
                    finished=False, truncated=True, reward=0.0, step_boundaries=[], token_starts=[])
        e.advantages = [0.1] * len(e.action_ids(tok.eos_token_id))
        out.append(e)
    return out


def run_perf_check(check: PerfCheck, work: Path, inputs: Path, cpu: bool = False, speed: bool = True
                   ) -> tuple[str, str, dict]:
    """The trainer's phases against the plan; with `speed` also the engine's generate and MC
    tokens/s and the push's seconds (with vLLM the engine is built either way: its memory is a phase)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from vineppo.config import load_config
    from vineppo.distributed import build_accelerator
    from vineppo.engine.factory import make_engine
    from vineppo.plan import Launch, plan_memory, shape_from_config
    from vineppo.trainer import Trainer

    cuda = torch.cuda.is_available() and not cpu
    from benchmarks.gpucheck.children import initial_model

    tok = AutoTokenizer.from_pretrained(initial_model(inputs))
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    hf_cfg = half_b_llama_config(**ids) if cuda else rehearsal_llama_config(**ids)
    big = work / "models" / check.name
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    with device:
        LlamaForCausalLM(hf_cfg).to(torch.bfloat16).save_pretrained(big)
    tok.save_pretrained(big)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    overrides = perf_overrides(big, inputs / "data", check.backend)
    if not cuda:  # rehearsal: the same code at a size a CPU runs in seconds
        overrides += ["sampling.max_sequence_length=128", "ppo.minibatch_size=4", "ppo.micro_batch_size=2"]
    cfg = load_config(PERF_CONFIG, overrides)
    L, B = cfg.sampling.max_sequence_length, cfg.ppo.micro_batch_size
    measures: dict = {"model": "half_b_llama_config" if cuda else "rehearsal_llama_config",
                      "config": PERF_CONFIG.name, "micro_batch": B, "sequence_length": L, "backend": check.backend,
                      "alone_on_the_gpu": speed or check.backend == "vllm"}
    mem = (lambda: torch.cuda.memory_allocated()) if cuda else (lambda: 0)  # noqa: E731
    peak = (lambda: torch.cuda.max_memory_allocated()) if cuda else (lambda: 0)  # noqa: E731
    reset = torch.cuda.reset_peak_memory_stats if cuda else (lambda: None)

    acc = build_accelerator(cfg)
    trainer = Trainer(cfg, acc, tok, progress=False)
    measures["params"] = sum(p.numel() for p in trainer.unwrapped_policy().parameters())
    measured = {"resident": mem()}
    # the log-prob pass ends where the iteration's episodes are gathered: read its peak there
    gather = trainer._gather_iteration

    def gather_and_mark(*a, **k):
        measured["logprobs"] = peak()
        reset()
        return gather(*a, **k)

    trainer._gather_iteration = gather_and_mark
    reset()
    episodes = _episodes(tok, cfg.ppo.minibatch_size, L, min(256, L // 4), hf_cfg.vocab_size)
    stats = trainer.step(episodes, iteration=0)
    measured["train"] = peak()
    measures.update({"logprobs_tokens_per_s": stats["logprobs/tokens_per_s"],
                     "train_tokens_per_s": stats["train/tokens_per_s"]})
    del episodes
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    reset()

    engine = None
    try:
        if speed or check.backend == "vllm":
            engine = make_engine(cfg.engine, model_path=str(big), tokenizer=tok, model=trainer.engine_source_model(),
                                 max_model_len=L, progress=False, device=acc.device)
        if check.backend == "vllm" and cuda:
            free, total = torch.cuda.mem_get_info()
            measured_rollout = total - free
        if speed:
            measures.update(engine_speed(engine, trainer, cfg, hf_cfg.vocab_size, cuda))
            if check.backend == "hf":
                measures["rollout_allocator_peak_bytes"] = peak()  # trainer resident + engine copy + KV cache
    finally:
        if engine is not None:
            engine.close()
        shutil.rmtree(big, ignore_errors=True)  # 1.1 GB of random weights: nothing to keep

    if not cuda:
        return PASS, "rehearsal on CPU: the code ran; no GPU memory to compare", measures
    capacity = torch.cuda.get_device_properties(0).total_memory
    plan = plan_memory(shape_from_config(hf_cfg), cfg, Launch("single_gpu.yaml", "single", 1), capacity)
    planned = planned_allocator_bytes(plan)
    lines = compare_with_plan(measured, planned)
    if check.backend == "vllm":
        rollout_plan = next(p.total for p in plan.phases if p.name == "rollout")
        lines += compare_with_plan({"rollout (GPU in use, engine awake)": measured_rollout},
                                   {"rollout (GPU in use, engine awake)": rollout_plan})
    measures["memory_bytes"] = {k: {"measured": v, "planned": planned.get(k)} for k, v in measured.items()}
    if check.backend == "vllm":
        measures["memory_bytes"]["rollout_in_use"] = {"measured": measured_rollout, "planned": rollout_plan}
    measures["capacity_bytes"] = capacity
    bad = [d for _, ok, d in lines if not ok]
    text = "; ".join(d for _, _, d in lines)
    rates = f"train {measures['train_tokens_per_s']:.0f} tok/s"
    if speed:
        rates = (f"generate {measures['generate_tokens_per_s']:.0f} tok/s, MC {measures['mc_tokens_per_s']:.0f} tok/s, "
                 f"{rates}, push {measures['sync_seconds']:.2f}s")
    if bad:
        return FAIL, f"measured above the plan: {'; '.join(bad)} ({rates})", measures
    return PASS, f"{text}; {rates}", measures


def engine_speed(engine, trainer, cfg, vocab: int, cuda: bool) -> dict:
    """Generate tokens/s (rollout-like: 32 prompts × 2 samples), MC tokens/s (16 long states × K
    continuations, shorter each), and the seconds of one streamed push (asleep, then woken)."""
    import torch

    from vineppo.engine.base import SamplingParams
    from vineppo.lora_sync import PolicySync

    out = {}
    g = torch.Generator().manual_seed(1)
    prompt_len, new = (256, 256) if cuda else (16, 8)
    prompts = [torch.randint(3, vocab, (prompt_len,), generator=g).tolist() for _ in range(32)]
    sp = SamplingParams(n=2, temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p, max_new_tokens=new,
                        seed=0)
    t0 = time.perf_counter()
    outs = engine.generate(prompts, sp)
    out["generate_tokens_per_s"] = sum(len(c.token_ids) for o in outs for c in o) / (time.perf_counter() - t0)
    states = [torch.randint(3, vocab, (3 * prompt_len,), generator=g).tolist() for _ in range(16)]
    mc = SamplingParams(n=min(cfg.mc.k, 4), temperature=cfg.sampling.temperature, top_p=cfg.sampling.top_p,
                        max_new_tokens=new // 2, seed=1)
    t0 = time.perf_counter()
    outs = engine.generate(states, mc)
    out["mc_tokens_per_s"] = sum(len(c.token_ids) for o in outs for c in o) / (time.perf_counter() - t0)
    if cfg.engine.sleep_during_training:
        engine.sleep()
    t0 = time.perf_counter()
    PolicySync(adapter=False).push(engine, trainer)
    if cfg.engine.sleep_during_training:
        engine.wake()
    out["sync_seconds"] = time.perf_counter() - t0
    return out

