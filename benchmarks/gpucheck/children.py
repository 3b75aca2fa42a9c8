"""What one check does in its own process (`benchmarks/gpu_check.py --child NAME`): a training
run under `accelerate launch` and its verification, or one engine's push check.

Each returns (status, one-line detail, measures). Training runs keep their metrics.jsonl, config
and episodes; their checkpoints are deleted once verified (weights are not evidence, and they would
crowd the folder that comes back from the GPU machine).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from benchmarks.gpucheck.agreement import MAX_LOGPROB_GAP, judge_agreement, logprob_gap, teacher_forced_logprobs
from benchmarks.gpucheck.runner import FAIL, PASS, SKIP, log_tail
from benchmarks.gpucheck.table import (ROOT, TEMPERATURE, TRAIN_CONFIG, EngineCheck, TrainRun, train_overrides)

Outcome = tuple[str, str, dict]


# ---- inputs shared by every check (made once, in a process of their own) -------------------------
#: the tiny model's shape: the demo's (head_dim 32, which vLLM's attention needs), 0.3M parameters
TINY_SHAPE = dict(hidden_size=64, num_layers=4, num_heads=2, intermediate_size=256)
#: SFT steps before the training checks: a random-init model never earns a reward, and with all
#: rewards 0 the VinePPO and GRPO advantages are 0, the policy does not move, and no check could
#: see a missing push. This many steps give mixed rewards within most questions' samples.
SFT_STEPS = 600


def input_paths(inputs: Path) -> tuple[Path, Path]:
    """(the SFT'ed tiny model, the data directory) under `inputs`: what the training checks use."""
    return inputs / "tiny", inputs / "data"


def initial_model(inputs: Path) -> Path:
    """The random-init tiny model (and the tokenizer every check uses): ready before any check."""
    return inputs / "tiny_init"


def prepare_base(inputs: Path) -> Path:
    """The arithmetic task's rows as JSONL and a tiny random-init Llama + byte-level BPE tokenizer
    trained on them (vineppo.tiny), in this process on the CPU (seconds): nothing is downloaded."""
    from transformers.utils import logging as hf_logging

    from vineppo.tasks import get_task
    from vineppo.tasks.arithmetic import make_splits
    from vineppo.tiny import TinyModelConfig, build_model, build_tokenizer

    hf_logging.disable_progress_bar()  # this runs in the parent: its output is one line per check
    _, data = input_paths(inputs)
    task = get_task("arithmetic")
    rows_train, rows_test = make_splits(4000, 100, 0)
    data.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", rows_train), ("test", rows_test)):
        with open(data / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    tok = build_tokenizer([task.prompt(r) + task.sft_target(r) for r in rows_train], 640)
    out = initial_model(inputs)
    build_model(tok, TinyModelConfig(**TINY_SHAPE)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def prepare_sft(inputs: Path, device: str = "cpu", sft_steps: int = SFT_STEPS) -> dict:
    """The initial tiny model fine-tuned for `sft_steps` (vineppo.sft, the demo's recipe) and saved
    as the training checks' start. Returns facts for the log: parameters, SFT seconds, the sampled
    reward rate and the share of questions whose samples disagree (what gives VinePPO and GRPO
    non-zero advantages)."""
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vineppo.engine.base import SamplingParams
    from vineppo.engine.hf import HFEngine
    from vineppo.sft import SFTConfig, sft
    from vineppo.tasks import get_task
    from vineppo.tokens import encode_prompt

    model_dir, data = input_paths(inputs)
    task = get_task("arithmetic")
    rows_train = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(initial_model(inputs))
    model = AutoModelForCausalLM.from_pretrained(initial_model(inputs), dtype=torch.float32).to(device)
    t0 = time.perf_counter()
    sft(model, tok, task, rows_train, SFTConfig(
        max_steps=sft_steps, batch_size=64, micro_batch_size=64, lr=3e-3, lr_schedule="constant", warmup_ratio=0.03,
        warmup_shape="linear", max_length=192, loss_reduction="tokens", drop_last=True, seed=0), progress=False)
    seconds = time.perf_counter() - t0
    model.eval()
    picked = rows_train[:32]
    engine = HFEngine(model, tok, progress=False)
    outs = engine.generate([encode_prompt(tok, task.prompt(r)) for r in picked],
                           SamplingParams(n=4, temperature=0.6, top_p=0.9, max_new_tokens=48, seed=0))
    rewards = [[task.reward(c.text, r) if c.finish_reason == "stop" else 0.0 for c in o] for o, r in zip(outs, picked)]
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    model.to("cpu").save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, model_dir)  # complete or absent: a check never reads half a model
    flat = [x for g in rewards for x in g]
    return {"params": sum(p.numel() for p in model.parameters()), "sft_steps": sft_steps, "sft_seconds": seconds,
            "reward_rate": sum(flat) / len(flat), "mixed_questions": sum(0 < sum(g) < len(g) for g in rewards) / len(rewards)}


# ---- launch files -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_process_launch(src: Path, dst: Path, port: int | None = None, cpu: bool = False) -> Path:
    """`src` with one process on this machine: the strategy's code path (FSDP2 / ZeRO-2 / ZeRO-3)
    on one GPU; its own rendezvous port, so that checks may run side by side; on CPU (rehearsal)
    without mixed precision, as launch/cpu/*.yaml."""
    import yaml

    data = yaml.safe_load(src.read_text())
    data["num_processes"] = 1
    data["num_machines"] = 1
    data.pop("gpu_ids", None)
    if port is not None:
        data["main_process_port"] = port
    if cpu:
        data["mixed_precision"] = "no"
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(yaml.safe_dump(data))
    return dst


# ---- training runs ----------------------------------------------------------------------------------
def policy_shift(initial: Path, moved: Path, episodes_file: Path, temperature: float = TEMPERATURE,
                 limit: int = 16) -> float:
    """The control of a training check: the log-prob gap a missing push would have left, i.e. the
    gap between the initial weights (what the engine started with) and the weights after iteration
    1 (what it should sample iteration 2 with), on iteration 2's own sampled episodes, teacher-forced
    in float32 on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    rows = [json.loads(line) for line in episodes_file.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["response_ids"]][:limit]
    if not rows:
        raise ValueError(f"{episodes_file}: no episode with a response")
    prompts = [r["prompt_ids"] for r in rows]
    responses = [r["response_ids"] for r in rows]
    lps = []
    for path in (initial, moved):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        lps.append(teacher_forced_logprobs(model, prompts, responses, temperature, device="cpu"))
        del model
    return logprob_gap(lps[0], lps[1])


def _rate(row: dict, tokens: str, seconds: str) -> float | None:
    t, s = row.get(tokens), row.get(seconds)
    return float(t) / float(s) if t is not None and s else None


def verify_training(out: Path, start_model: Path, tolerance: float = MAX_LOGPROB_GAP) -> Outcome:
    """Iterations 1 and 2 logged, a finite loss, and iteration 2's `sync/logprob_gap` (sampled
    with the weights pushed after iteration 1) within the tolerance while the control, the gap a
    missing push would have left, is above it."""
    from vineppo import checkpoint as ckpt

    path = out / "metrics.jsonl"
    if not path.is_file():
        return FAIL, f"no {path.name} in {out}", {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    its = [r.get("iteration") for r in rows]
    if its != [1, 2]:
        return FAIL, f"metrics.jsonl holds iterations {its}, expected [1, 2]", {}
    row = rows[-1]
    loss, gap = row.get("train/loss"), row.get("sync/logprob_gap")
    measures = {
        "logprob_gap_iteration_1": rows[0].get("sync/logprob_gap"), "logprob_gap_after_push": gap,
        "generate_tokens_per_s": _rate(row, "generate/tokens", "generate/seconds"),
        "mc_tokens_per_s": _rate(row, "mc/tokens", "mc/seconds"),
        "sync_seconds": row.get("sync/seconds"), "train_tokens_per_s": row.get("train/tokens_per_s"),
        "iteration_seconds": row.get("seconds"),
    }
    if loss is None or not math.isfinite(loss):
        return FAIL, f"train/loss {loss} at iteration 2", measures
    if gap is None:
        return FAIL, "iteration 2 logged no sync/logprob_gap (the engine returned no log-probs)", measures
    moved = out / "checkpoints" / ckpt.checkpoint_name(1)
    episodes = out / "episodes" / "iter_000002.rank0.jsonl"
    control = policy_shift(start_model, moved, episodes)
    measures["control_gap_without_push"] = control
    ok, detail = judge_agreement(gap, control, tolerance)
    return (PASS if ok else FAIL), f"iteration 2 after a push: {detail}; train/loss {loss:.4f}", measures


def run_training(run: TrainRun, work: Path, inputs: Path, cpu: bool = False) -> Outcome:
    """`accelerate launch --config_file <one-process launch> -m vineppo train` (twice with
    `resume`: killed after iteration 1's checkpoint, then `--resume`), then `verify_training`."""
    from vineppo import checkpoint as ckpt
    from vineppo.loop import CRASH_ENV

    for module in run.optional:
        if importlib.util.find_spec(module) is None:
            return SKIP, f"{module} is not installed", {}
    model, data = input_paths(inputs)
    out = work / "runs" / run.name
    shutil.rmtree(out, ignore_errors=True)
    launch = one_process_launch(ROOT / "launch" / run.launch, work / "launch" / f"{run.name}.yaml", free_port(), cpu)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch), "-m", "vineppo",
           "train", "--config", str(TRAIN_CONFIG), "--output-dir", str(out),
           *train_overrides(model, data, run.algorithm, run.backend), *run.extra]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop(CRASH_ENV, None)
    print("+", " ".join(cmd), flush=True)
    if run.resume:
        rc = subprocess.call(cmd, env={**env, CRASH_ENV: "1"})
        print(f"gpu_check: first run exited {rc} (killed after iteration 1 on purpose)", flush=True)
        if rc == 0:
            return FAIL, "the first run was not killed after iteration 1 (crash hook ignored)", {}
        found = ckpt.latest_checkpoint(out, need_trainer_state=True)
        if found is None or found[1] != 1:
            return FAIL, f"no complete checkpoint of iteration 1 after the crash (found {found})", {}
        cmd = cmd + ["--resume"]
        print("+", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, env=env)
    if rc != 0:  # the traceback is in this check's log; its last error line makes the one-line verdict
        sys.stdout.flush()
        return FAIL, f"vineppo train exited {rc}: {log_tail(work / 'logs' / f'{run.name}.log')}", {}
    try:
        return verify_training(out, model)
    finally:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


# ---- one engine: control, streamed push, agreement --------------------------------------------------
def run_engine_check(check: EngineCheck, work: Path, inputs: Path, cpu: bool = False) -> Outcome:
    """The trainer (one process, bf16) and its engine (bf16): the policy is moved (noise on every
    weight, as an update would), the engine, still holding the initial weights, must disagree with
    it (control); then the trainer's streamed push (`PolicySync.push`; vLLM: asleep at
    `sleep_level`, pushed, woken) and the engine must agree within the tolerance."""
    import time

    import torch

    from vineppo.config import load_config
    from vineppo.distributed import build_accelerator
    from vineppo.engine.factory import make_engine
    from vineppo.lora_sync import PolicySync
    from vineppo.loop import load_tokenizer
    from vineppo.trainer import Trainer

    _, data = input_paths(inputs)
    model_dir = initial_model(inputs)
    overrides = train_overrides(model_dir, data, "grpo", check.backend)
    if check.sleep_level is not None:
        overrides.append(f"engine.sleep_level={check.sleep_level}")
    cfg = load_config(TRAIN_CONFIG, overrides)
    acc = build_accelerator(cfg)
    tok = load_tokenizer(cfg)
    trainer = Trainer(cfg, acc, tok, progress=False)
    engine = make_engine(cfg.engine, model_path=str(model_dir), tokenizer=tok, model=trainer.engine_source_model(),
                         max_model_len=cfg.sampling.max_sequence_length, progress=False, device=acc.device)
    measures: dict = {"backend": check.backend}
    try:
        problems = []
        if check.backend == "vllm":
            measures["vllm_version"] = engine.vllm_version
            if engine.llm_args.get("enforce_eager") and not cpu:
                problems.append("CUDA graphs are off (enforce_eager)")
            if not engine.untruncated_logprobs:
                problems.append(f"the untruncated log-prob patch did not apply on vLLM {engine.vllm_version}")
        else:
            dtype = next(engine.model.parameters()).dtype
            device = next(engine.model.parameters()).device
            measures["engine_dtype"], measures["engine_device"] = str(dtype), str(device)
            if dtype != torch.bfloat16:
                problems.append(f"the engine runs in {dtype}, not engine.dtype=bfloat16")
            if device.type != acc.device.type:
                problems.append(f"the engine generates on {device}, the trainer on {acc.device}")
        policy = trainer.unwrapped_policy()
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():  # an update that moves every weight
            for p in policy.parameters():
                p.add_((0.01 * torch.randn(p.shape, generator=gen)).to(p.device, p.dtype))
        rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()[:8]]
        prompts = [tok(r["question"])["input_ids"] for r in rows]
        autocast = torch.bfloat16 if acc.device.type == "cuda" else None
        from benchmarks.gpucheck.agreement import engine_gap

        control, _ = engine_gap(engine, policy, prompts, temperature=TEMPERATURE, autocast_dtype=autocast)
        measures["control_gap_without_push"] = control
        if check.sleep_level is not None:
            free_awake = torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0
            engine.sleep()
            freed = (torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0) - free_awake
            measures["sleep_freed_bytes"] = freed
            if torch.cuda.is_available() and not cpu and freed <= 0:
                problems.append(f"sleep level {check.sleep_level} freed no GPU memory")
        t0 = time.perf_counter()
        PolicySync(adapter=False).push(engine, trainer)
        measures["push_seconds"] = time.perf_counter() - t0
        if check.sleep_level is not None:
            engine.wake()
        gap, tokens = engine_gap(engine, policy, prompts, temperature=TEMPERATURE, autocast_dtype=autocast)
        measures["logprob_gap_after_push"], measures["tokens_compared"] = gap, tokens
        ok, detail = judge_agreement(gap, control)
        if not ok:
            problems.append(detail)
        if problems:
            return FAIL, "; ".join(problems), measures
        return PASS, f"{detail}; push {measures['push_seconds']:.2f}s", measures
    finally:
        engine.close()
