"""One-command GPU check: `python benchmarks/gpu_check.py` on a machine with one CUDA GPU.

No network: the models are random-init Llamas built here, the data is the synthetic arithmetic
task (vineppo.tasks.arithmetic). Every CUDA-only branch runs once, through the package's own entry
points (`vineppo train` under `accelerate launch`, the engine classes, the Trainer):

- vLLM's CUDA engine with CUDA graphs; sleep levels 1 and 2 with a weight push and wake; greedy
  equality with the pushed weights afterwards;
- one training iteration of VinePPO, PPO and GRPO in bf16 under single-GPU, and of each under
  FSDP2, ZeRO-2 and ZeRO-3 with one process; the sync canary (`sync/logprob_gap` <= 1e-2);
  LoRA adapter sync; reference offload; flash-attn when installed;
- `torch.cuda.max_memory_allocated` of a ~0.5B Llama's training step at paper sequence lengths,
  and the GPU memory in use with the engine awake, against `vineppo plan`'s prediction.

`--full` runs VinePPO, PPO and GRPO under each of FSDP2, ZeRO-2 and ZeRO-3 (by default each
strategy runs one of them). One line per check, the last `gpu_check: N passed, M failed`; exit 1 if any failed. Without CUDA:
`gpu_check: no CUDA device, nothing checked`, exit 0. Budget: <= 8 minutes on one 80 GB GPU.
The pure parts (runner, formatting, the plan comparison, the model shapes) are tested on CPU in
tests/test_gpu_check.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: the canary's bound in bf16
MAX_LOGPROB_GAP = 1e-2
#: measured vs planned bytes: the plan may be this much above (it is an upper estimate) or below
PLAN_TOLERANCE = 0.25


# ---- the runner (pure; tested on CPU) ------------------------------------------------------------
@dataclass
class Result:
    name: str
    ok: bool | None  # None: skipped (e.g. flash-attn not installed)
    detail: str
    seconds: float = 0.0


def run_checks(checks: list[tuple[str, Callable[[], str]]]) -> list[Result]:
    """Run each check; a check returns a one-line detail, raises to fail, or raises `Skip`."""
    results = []
    for name, fn in checks:
        t0 = time.perf_counter()
        try:
            detail = fn()
            results.append(Result(name, True, detail, time.perf_counter() - t0))
        except Skip as e:
            results.append(Result(name, None, str(e), time.perf_counter() - t0))
        except Exception as e:  # noqa: BLE001 - every failure becomes one line
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            results.append(Result(name, False, f"{type(e).__name__}: {msg}", time.perf_counter() - t0))
        print(format_result(results[-1]), flush=True)
    return results


class Skip(Exception):
    pass


def format_result(r: Result) -> str:
    tag = {True: "PASS", False: "FAIL", None: "SKIP"}[r.ok]
    return f"{tag} {r.name} ({r.seconds:.0f}s): {r.detail}"


def summary(results: list[Result]) -> str:
    passed = sum(r.ok is True for r in results)
    failed = sum(r.ok is False for r in results)
    return f"gpu_check: {passed} passed, {failed} failed"


def compare_with_plan(measured: dict[str, int], planned: dict[str, int],
                      tolerance: float = PLAN_TOLERANCE) -> list[tuple[str, bool, str]]:
    """Per phase: the planned bytes within [measured × (1 − tol), measured × (1 + tol)]."""
    out = []
    for phase, m in measured.items():
        p = planned[phase]
        ratio = p / m if m else math.inf
        ok = (1 - tolerance) <= ratio <= (1 + tolerance)
        out.append((phase, ok, f"{phase}: measured {m / 2**30:.2f} GiB, planned {p / 2**30:.2f} GiB "
                                f"(plan/measured {ratio:.2f})"))
    return out


def half_b_llama_config(vocab_size: int = 32000, max_position_embeddings: int = 4096, **token_ids):
    """A ~0.56B Llama, 557,774,080 parameters (hidden 1280, 24 layers, 20 heads, MLP 3456, vocab 32000, untied)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=1280, intermediate_size=3456, num_hidden_layers=24,
                       num_attention_heads=20, num_key_value_heads=20, max_position_embeddings=max_position_embeddings,
                       tie_word_embeddings=False, **token_ids)


def one_process_launch(src: Path, dst: Path) -> Path:
    """`src` launch file with one process (FSDP2 / ZeRO-2 / ZeRO-3 code paths on one GPU)."""
    import yaml

    data = yaml.safe_load(src.read_text())
    data["num_processes"] = 1
    data["num_machines"] = 1
    data.pop("gpu_ids", None)
    dst.write_text(yaml.safe_dump(data))
    return dst


# ---- set-up (GPU machine) --------------------------------------------------------------------------
class Workspace:
    def __init__(self, root: Path):
        self.root = root
        from vineppo.tasks.arithmetic import make_splits

        rows_train, rows_test = make_splits(600, 50, 0)
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        for name, rows in (("train", rows_train), ("test", rows_test)):
            with open(self.data / f"{name}.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        from vineppo.tiny import save_tiny

        self.tiny = save_tiny(root / "tiny", [r["question"] + "\n" + r["answer"] for r in rows_train])

    def train_overrides(self, algorithm: str) -> list[str]:
        return train_overrides(self.tiny, self.data, algorithm)


def train_overrides(model_dir: Path, data_dir: Path, algorithm: str) -> list[str]:
    """One short bf16 iteration of `algorithm` on the tiny model with the vLLM engine."""
    return [f"algorithm={algorithm}", f"model.name_or_path={model_dir}", "model.dtype=bfloat16",
            "model.gradient_checkpointing=true", "data.task=arithmetic", f"data.source={data_dir}",
            "data.validation_size=0", "iterations=1", "save_every=1", "episodes.questions_per_iteration=8",
            "episodes.samples_per_question=4", "ppo.minibatch_size=16", "ppo.micro_batch_size=8",
            "sampling.max_new_tokens=48", "sampling.max_sequence_length=512", "mc.k=2",
            "mc.max_states_per_response=4", "engine.backend=vllm", "engine.gpu_memory_utilization=0.2",
            "engine.kv_cache_memory_bytes=null", "logging.progress=false", "optim.lr=1e-5"]


#: the config every training check starts from (then `train_overrides` and the run's extras)
TRAIN_CONFIG = ROOT / "configs" / "tiny" / "gsm8k_vineppo.yaml"
#: (check name, algorithm, launch file or None for `accelerate launch --num_processes 1`, extra overrides)
TRAIN_RUNS = [
    ("single_vineppo_reference_offload", "vineppo", "single_gpu.yaml",
     ["model.reference_offload=true", "engine.sleep_level=1"]),
    ("single_ppo_sleep_level_2", "ppo", "single_gpu.yaml", ["engine.sleep_level=2"]),
    ("single_grpo", "grpo", "single_gpu.yaml", []),
    ("lora_adapter_sync", "grpo", "single_gpu.yaml", ["model.lora={r: 8, alpha: 16, sync: adapter}"]),
    ("fsdp2_vineppo", "vineppo", "fsdp_8gpu.yaml", []),
    ("zero2_ppo", "ppo", "zero2_8gpu.yaml", []),
    ("zero3_grpo", "grpo", "zero3_8gpu.yaml", []),
]
#: `--full`: every algorithm under every sharded strategy too (longer than the 8-minute budget)
FULL_RUNS = [(f"{launch.split('_')[0]}_{algorithm}", algorithm, launch, [])
             for launch in ("fsdp_8gpu.yaml", "zero2_8gpu.yaml", "zero3_8gpu.yaml")
             for algorithm in ("vineppo", "ppo", "grpo")]
FLASH_RUN = ("flash_attention_2", "grpo", None, ["model.attn_implementation=flash_attention_2"])


def train_run(ws: Workspace, name: str, algorithm: str, launch: str | None, extra: list[str]) -> dict:
    """`accelerate launch --config_file L -m vineppo train ...`: the last metrics row."""
    out = ws.root / "runs" / name
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch is not None:
        cmd += ["--config_file", str(one_process_launch(ROOT / "launch" / launch, ws.root / f"{name}.yaml"))]
    else:
        cmd += ["--num_processes", "1", "--mixed_precision", "bf16"]
    cmd += ["-m", "vineppo", "train", "--config", str(TRAIN_CONFIG),
            "--output-dir", str(out), *ws.train_overrides(algorithm), *extra]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        raise RuntimeError(f"exit {proc.returncode}: {tail[0]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows[-1]


def check_training(ws: Workspace, name: str, algorithm: str, launch: str | None, extra: list[str]) -> str:
    row = train_run(ws, name, algorithm, launch, extra)
    gap = row.get("sync/logprob_gap")
    loss = row.get("train/loss")
    if loss is None or not math.isfinite(loss):
        raise AssertionError(f"train/loss {loss}")
    if gap is None or gap > MAX_LOGPROB_GAP:
        raise AssertionError(f"sync/logprob_gap {gap} > {MAX_LOGPROB_GAP}: the engine does not hold the trainer's weights")
    return f"train/loss {loss:.4f}, sync/logprob_gap {gap:.2e}"


def check_engine_sleep(ws: Workspace, level: int) -> str:
    """CUDA engine with CUDA graphs; sleep at `level`, push perturbed weights, wake; greedy
    continuations equal those of a model built from the pushed weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vineppo.config import EngineConfig
    from vineppo.engine.factory import make_engine
    from vineppo.loop import greedy_match

    tok = AutoTokenizer.from_pretrained(ws.tiny)
    engine = make_engine(EngineConfig(backend="vllm", dtype="bfloat16", gpu_memory_utilization=0.15,
                                      sleep_level=level), model_path=str(ws.tiny), tokenizer=tok,
                         max_model_len=512, progress=False)
    try:
        if getattr(engine, "is_cpu", True):
            raise AssertionError("the vLLM engine runs on CPU")
        args = getattr(engine.llm.llm_engine, "vllm_config", None)
        eager = getattr(getattr(args, "model_config", None), "enforce_eager", None)
        if eager:
            raise AssertionError("CUDA graphs are off (enforce_eager)")
        model = AutoModelForCausalLM.from_pretrained(ws.tiny, dtype=torch.float32)
        g = torch.Generator().manual_seed(level)
        sd = {}
        for k, v in model.state_dict().items():
            v = v + 0.02 * torch.randn(v.shape, generator=g) if v.dim() > 1 else v
            if k == "lm_head.weight":
                v = 30 * v  # peaked logits: greedy argmax robust to bf16 vs fp32 rounding
            sd[k] = v.to(torch.bfloat16)
        free_awake = torch.cuda.mem_get_info()[0]
        engine.sleep()
        freed = torch.cuda.mem_get_info()[0] - free_awake
        engine.update_weights(sd)
        engine.wake()
        prompts = [tok(t)["input_ids"] for t in ("Tom has 3 apples.", "Mia has 12 shells. She finds 7,")]
        match = greedy_match(engine, sd, model.config, prompts, max_new_tokens=16)
        if match != 1.0:
            raise AssertionError(f"greedy match {match} after sleep level {level} + push + wake")
        if freed <= 0:
            raise AssertionError(f"sleep level {level} freed no GPU memory")
        return f"sleep freed {freed / 2**30:.2f} GiB; greedy match 1.0 after push + wake"
    finally:
        engine.close()


def check_memory_against_plan(ws: Workspace) -> str:
    """A ~0.5B random-init Llama, the Rho VinePPO paper config (micro-batch 16, 2048 tokens):
    the trainer's allocator peak over one step (log-probs + training) and the GPU memory in use
    with the engine awake, against the plan's phases."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from vineppo.config import load_config
    from vineppo.distributed import build_accelerator
    from vineppo.engine.factory import make_engine
    from vineppo.episodes import Episode
    from vineppo.plan import Launch, plan_memory, shape_from_config
    from vineppo.trainer import Trainer

    tok = AutoTokenizer.from_pretrained(ws.tiny)
    big = ws.root / "half_b"
    if not (big / "config.json").is_file():
        hf = half_b_llama_config(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
        LlamaForCausalLM(hf).to(torch.bfloat16).save_pretrained(big)
        tok.save_pretrained(big)
    cfg = load_config(ROOT / "configs" / "paper" / "rho1b_math_vineppo.yaml",
                      [f"model.name_or_path={big}", "model.attn_implementation=sdpa", "data.task=arithmetic",
                       f"data.source={ws.data}", "distributed.memory_check=false"])
    capacity = torch.cuda.get_device_properties(0).total_memory
    plan = plan_memory(shape_from_config(half_b_llama_config()), cfg, Launch("single", "single", 1), capacity)
    phases = {p.name: p.parts for p in plan.phases}
    not_allocator = ("engine_asleep", "cuda_context")
    planned_step = max(sum(v for k, v in phases[n].items() if k not in not_allocator) for n in ("logprobs", "train"))

    acc = build_accelerator(cfg)
    trainer = Trainer(cfg, acc, tok, progress=False)
    L = cfg.sampling.max_sequence_length
    g = torch.Generator().manual_seed(0)
    episodes = []
    for i in range(cfg.ppo.minibatch_size):
        prompt = torch.randint(3, len(tok), (256,), generator=g).tolist()
        resp = torch.randint(3, len(tok), (L - 256,), generator=g).tolist()
        e = Episode(question_index=i, sample_index=0, prompt_ids=prompt, response_ids=resp, response_text="",
                    finished=False, truncated=True, reward=0.0, step_boundaries=[], token_starts=[])
        e.advantages = [0.1] * len(e.action_ids(tok.eos_token_id))
        episodes.append(e)
    torch.cuda.reset_peak_memory_stats()
    trainer.step(episodes, iteration=0)
    measured_step = torch.cuda.max_memory_allocated()
    torch.cuda.empty_cache()
    engine = make_engine(cfg.engine, model_path=str(big), tokenizer=tok, max_model_len=L, progress=False)
    free, total = torch.cuda.mem_get_info()
    measured_rollout = total - free
    engine.close()
    del trainer, engine
    import gc

    gc.collect()
    torch.cuda.empty_cache()
    lines = compare_with_plan({"train step": measured_step, "rollout": measured_rollout},
                              {"train step": planned_step, "rollout": sum(phases["rollout"].values())})
    bad = [d for _, ok, d in lines if not ok]
    if bad:
        raise AssertionError("; ".join(bad))
    return "; ".join(d for _, _, d in lines)


def training_runs(full: bool) -> list[tuple[str, str, str | None, list[str]]]:
    """TRAIN_RUNS, with `full` the sharded strategies' runs replaced by all of FULL_RUNS."""
    if not full:
        return list(TRAIN_RUNS)
    return [r for r in TRAIN_RUNS if r[2] == "single_gpu.yaml"] + FULL_RUNS


def gpu_checks(ws: Workspace, full: bool = False) -> list[tuple[str, Callable[[], str]]]:
    import importlib.util

    def run(name, algorithm, launch, extra):
        return name, lambda: check_training(ws, name, algorithm, launch, extra)

    def flash_run():
        if importlib.util.find_spec("flash_attn") is None:
            raise Skip("flash-attn is not installed")
        return check_training(ws, *FLASH_RUN)

    # the memory comparison first: nothing else has touched the GPU yet
    return [("memory_vs_plan_0.5B", lambda: check_memory_against_plan(ws)),
            ("vllm_cuda_graphs_sleep_level_1", lambda: check_engine_sleep(ws, 1)),
            ("vllm_cuda_graphs_sleep_level_2", lambda: check_engine_sleep(ws, 2)),
            *(run(*r) for r in training_runs(full)),
            (FLASH_RUN[0], flash_run)]


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device, nothing checked")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="vineppo-gpu-check-") as tmp:
        try:
            ws = Workspace(Path(tmp))
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            print("gpu_check: 0 passed, 1 failed")
            return 1
        results = run_checks(gpu_checks(ws, full="--full" in sys.argv[1:]))
    print(summary(results))
    return 0 if all(r.ok is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
