"""The demo's SFT start: a tiny Llama + byte-level BPE tokenizer built locally and fine-tuned to a
mediocre start (stopped at a target validation accuracy), cached under a key of everything that
determines it, so a second run skips it. Also the torch thread count SFT and training use."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from vineppo.demo.config import code_fingerprint, CACHE_VERSION, TASK, DemoSettings, _say, _sha
from vineppo.tiny import TinyModelConfig


def default_cache_dir() -> Path:
    env = os.environ.get("VINEPPO_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vineppo"


def pick_torch_threads(model_cfg: TinyModelConfig, *, seq_len: int = 72, batch: int = 32,
                       repeats: int = 3) -> tuple[int, dict[int, float]]:
    """The faster of 1 thread and all cores for a forward + backward pass of the tiny model, and
    the seconds measured per pass. All cores must win by 15 % (contention tends to grow)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    most = max(1, min(os.cpu_count() or 1, torch.get_num_threads()))
    if most == 1:
        return 1, {}
    config = LlamaConfig(vocab_size=512, hidden_size=model_cfg.hidden_size, intermediate_size=model_cfg.intermediate_size,
                         num_hidden_layers=model_cfg.num_layers, num_attention_heads=model_cfg.num_heads,
                         num_key_value_heads=model_cfg.num_heads, max_position_embeddings=max(seq_len, 64))
    before = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        ids = torch.randint(0, 512, (batch, seq_len))
    times: dict[int, list[float]] = {1: [], most: []}
    try:
        for _ in range(repeats):
            for n in (1, most):
                torch.set_num_threads(n)
                t0 = time.perf_counter()
                model(input_ids=ids, labels=ids).loss.backward()
                times[n].append(time.perf_counter() - t0)
                model.zero_grad(set_to_none=True)
    finally:
        torch.set_num_threads(before)
    best = {n: min(v) for n, v in times.items()}
    return (most if best[most] < 0.85 * best[1] else 1), best


class _TorchThreads:
    def __init__(self, n: int | None):
        self.n = n
        self.before: int | None = None

    def __enter__(self):
        import torch

        if self.n:
            self.before = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        import torch

        if self.before is not None:
            torch.set_num_threads(self.before)


def cpu_numerics() -> dict:
    """What the float results of a CPU training step depend on besides the thread count: torch's
    kernel ISA (`ATEN_CPU_CAPABILITY`, default the CPU's best) and MKL's code branch (`MKL_CBWR`).
    Measured on one AVX-512 machine: each of the two changes the SFT start's weights; with both
    fixed (and the threads), repeated runs give identical weights."""
    import torch

    return {"aten": torch.backends.cpu.get_cpu_capability(), "mkl_cbwr": os.environ.get("MKL_CBWR"),
            "torch": torch.__version__}


def sft_cache_key(demo: DemoSettings, sft_rows: Sequence[dict], stop_rows: Sequence[dict] = (),
                  threads: int | None = None, numerics: dict | None = None) -> str:
    """Everything that determines the SFT start: the rows it is trained on, model size, SFT recipe,
    the stopping rule with the problems it checks, the torch thread count and CPU code paths
    (`cpu_numerics`: float reductions, hence the weights, depend on them), plus the package version
    and a hash of its code."""
    return _sha({"version": CACHE_VERSION, "code": code_fingerprint(), "rows": _sha(list(sft_rows)), "model": asdict(demo.model),
                 "sft": asdict(demo.sft), "stop": asdict(demo.sft_stop),
                 "stop_rows": _sha(list(stop_rows)[: demo.sft_stop.problems]), "threads": threads,
                 **({"numerics": numerics} if numerics is not None else {})})[:16]


def greedy_pass_rate(model, tokenizer, rows: Sequence[dict], max_new_tokens: int = 64, task: str = TASK) -> float:
    """Greedy pass@1 of an in-memory model on `rows` (transformers engine; used to stop SFT)."""
    from vineppo.engine.hf import HFEngine
    from vineppo.evaluate import evaluate_model
    from vineppo.tasks import get_task

    engine = HFEngine(model, tokenizer, max_batch_size=len(rows), progress=False)
    try:
        summary, _ = evaluate_model(engine, tokenizer, get_task(task), rows, n_samples=1, temperature=0.0,
                                    max_new_tokens=max_new_tokens, progress=False)
    finally:
        engine.close()
    return float(summary["pass@1"])


def ensure_sft_start(demo: DemoSettings, sft_rows: Sequence[dict], cache_root: Path, *,
                     stop_rows: Sequence[dict] = (), progress: bool = False) -> tuple[Path, dict, bool]:
    """(model dir, info, cached): build tokenizer + tiny model, SFT it (to `demo.sft_stop`'s target
    validation accuracy on `stop_rows`, at most `demo.sft.max_steps`), save it under the cache;
    reuse a complete cached copy when the key matches."""
    import torch

    from vineppo.tasks import get_task

    stop = demo.sft_stop
    check_rows = list(stop_rows)[: stop.problems] if stop.validation_pass is not None else []
    numerics = cpu_numerics()
    key = sft_cache_key(demo, sft_rows, check_rows, threads=torch.get_num_threads(), numerics=numerics)
    final = cache_root / f"demo-sft-{key}"
    info_file = final / "demo_sft.json"
    if info_file.is_file() and (final / "config.json").is_file():
        return final, json.loads(info_file.read_text()), True

    from transformers import AutoTokenizer

    from vineppo.sft import sft
    from vineppo.tiny import build_model, build_tokenizer

    task = get_task(demo.data.task)
    t0 = time.perf_counter()
    texts = [task.prompt(r) + task.sft_target(r) for r in sft_rows]
    tokenizer = build_tokenizer(texts, demo.model.vocab_size)
    model = build_model(tokenizer, demo.model, seed=demo.sft.seed)
    n_params = sum(p.numel() for p in model.parameters())
    _say(f"SFT: tiny Llama ({n_params / 1e6:.2f}M parameters, hidden {demo.model.hidden_size}, "
         f"{demo.model.num_layers} layers, vocab {len(tokenizer)}), {demo.sft.max_steps} steps x batch "
         f"{demo.sft.batch_size}, lr {demo.sft.lr:g} on {len(sft_rows)} problems")
    tmp = cache_root / f".tmp-demo-sft-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    checks: list[tuple[int, float]] = []

    def should_stop(step: int, loss: float) -> bool:
        if not check_rows or step < stop.min_steps or (step - stop.min_steps) % stop.every:
            return False
        acc = greedy_pass_rate(model, tokenizer, check_rows, stop.max_new_tokens, demo.data.task)
        checks.append((step, acc))
        _say(f"  SFT step {step}: loss {loss:.3f}, greedy validation pass@1 {100 * acc:.0f}%")
        return acc >= stop.validation_pass

    try:
        stats = sft(model, tokenizer, task, sft_rows, demo.sft, progress=progress, out_dir=tmp,
                    should_stop=should_stop)
        # The tokenizer trap (shared notes): every loader must give the same ids as training did.
        probe = task.prompt(sft_rows[0]) + task.sft_target(sft_rows[0])
        reloaded = AutoTokenizer.from_pretrained(tmp)
        if reloaded(probe)["input_ids"] != tokenizer(probe)["input_ids"]:
            raise RuntimeError("the saved tokenizer does not reload to the same token ids")
        info = {"key": key, "steps": stats["steps"], "final_loss": stats["final_loss"],
                "validation_checks": checks, "stopped_at_target": bool(checks) and checks[-1][1] >= (stop.validation_pass or 0),
                "seconds": time.perf_counter() - t0, "parameters": n_params, "vocab": len(tokenizer),
                "rows": len(sft_rows), "model": asdict(demo.model), "sft": asdict(demo.sft),
                "torch": torch.__version__, "threads": torch.get_num_threads(), "numerics": numerics, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / "demo_sft.json").write_text(json.dumps(info, indent=1) + "\n")
        if final.exists():  # an incomplete copy (killed run)
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, info, False




def ensure_sft_continued(demo: DemoSettings, sft_dir: Path, sft_rows: Sequence[dict], steps: int) -> tuple[Path, dict, bool]:
    """The "SFT continued" control: the SFT start trained `steps` more optimizer steps with the SFT
    loss (the demo's SFT recipe: batch, LR, constant schedule; no warmup; a fresh data order), so
    RL is compared with *more SFT*, not only with the stopping point. Cached beside the SFT start;
    the demo trains it with one torch thread (fixed, like the start's).
    Returns (model dir, info, cached)."""
    import dataclasses

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vineppo.sft import sft
    from vineppo.tasks import get_task

    final = sft_dir.parent / f"{sft_dir.name}-continued-{steps}"
    info_file = final / "demo_sft_continued.json"
    if info_file.is_file() and (final / "config.json").is_file():
        return final, json.loads(info_file.read_text()), True
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(sft_dir)
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    cfg = dataclasses.replace(demo.sft, max_steps=steps, warmup_ratio=0.0, lr_schedule="constant",
                              seed=demo.sft.seed + 1)
    _say(f"SFT continued (control): the SFT start + {steps} SFT steps x batch {cfg.batch_size}, lr {cfg.lr:g}")
    tmp = sft_dir.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        stats = sft(model, tokenizer, get_task(demo.data.task), sft_rows, cfg, progress=False, out_dir=tmp)
        info = {"from": str(sft_dir), "steps": stats["steps"], "final_loss": stats["final_loss"],
                "seconds": time.perf_counter() - t0, "sft": asdict(cfg)}
        (tmp / info_file.name).write_text(json.dumps(info, indent=1) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, info, False
