"""The GPU check's run table: which checks exist, in which tier, and the command line of each.

Two tiers. "base" (without vLLM) runs on any CUDA machine with torch, transformers, accelerate
and peft (DeepSpeed from the carried wheels): the transformers engine in bf16 on the GPU, the
trainer in bf16 under one GPU, FSDP2, ZeRO-2, ZeRO-2 with optimizer offload and ZeRO-3 (one
process each, NCCL), the streamed push, merged LoRA, reference offload, `--resume`, and the memory
and speed of a ~0.5B model. "vllm" adds CUDA vLLM: CUDA graphs, sleep levels 1 and 2 with push
and wake, merged and adapter LoRA through vLLM, the log-prob patch, flash-attn when installed.

Every check runs in a process of its own (`benchmarks/gpu_check.py --child NAME`): vLLM allows one
engine per process on some versions, and a crash or a hang stays in its check. `validate_table`
proves, without a GPU, that every training check's config and overrides load as `vineppo train`
would read them and that every launch file exists.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.gpucheck.runner import Check

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
#: every training check starts from this config, then `train_overrides`, then its own extras
TRAIN_CONFIG = ROOT / "configs" / "tiny" / "gsm8k_vineppo.yaml"
#: the memory and speed check's paper run (micro-batch 16 × 2048 tokens, vLLM share 0.4)
PERF_CONFIG = ROOT / "configs" / "paper" / "rho1b_math_vineppo.yaml"
#: learning rate of the training checks: large enough that one iteration (4 optimizer steps) moves
#: the tiny policy's log-probs well past the tolerance (the control: a missing push would be seen).
#: (CPU rehearsal: at 3e-4 the controls were 0.024 (GRPO) to 0.06 (PPO), too close to the tolerance;
#: at 2e-3 they are 0.5 to 2.3 while the gaps after a push stay at 4e-3 to 1.1e-2)
TRAIN_LR = 2e-3
#: LoRA moves the policy far less per step (B starts at zero): at 3e-4 its control was 0.004
LORA_LR = "optim.lr=2e-2"
#: sampling temperature of the training checks (the tiny config's, the paper's)
TEMPERATURE = 0.6

TIERS = ("base", "vllm")


class TableError(ValueError):
    """A check of the table would not run as written (bad override, missing file)."""


@dataclass(frozen=True)
class TrainRun:
    """Two iterations of `vineppo train` under `accelerate launch` (one process): iteration 2
    samples with the weights pushed after iteration 1, so its `sync/logprob_gap` checks the push."""
    name: str
    algorithm: str
    launch: str                      # a file in launch/, reduced to one process
    extra: tuple[str, ...] = ()
    backend: str = "hf"
    quick: bool = False
    full_only: bool = False
    #: crash after iteration 1 (SIGKILL, no clean-up), then `--resume`
    resume: bool = False
    #: modules without which the check is skipped, not failed (e.g. flash_attn)
    optional: tuple[str, ...] = ()
    timeout: float = 240.0


@dataclass(frozen=True)
class EngineCheck:
    """One engine in its own process: control (the engine's initial weights against a moved policy
    must disagree), the trainer's streamed push (while asleep at `sleep_level` for vLLM, then
    wake), agreement within the tolerance."""
    name: str
    backend: str
    sleep_level: int | None = None
    quick: bool = False
    timeout: float = 180.0


@dataclass(frozen=True)
class PerfCheck:
    """A ~0.5B random-init Llama at the paper's lengths: allocator peaks per phase against
    `vineppo plan`, engine generate and MC tokens/s, push seconds, train tokens/s."""
    name: str
    backend: str
    quick: bool = True
    timeout: float = 240.0


Spec = TrainRun | EngineCheck | PerfCheck


def tier_of(spec: Spec) -> str:
    return "vllm" if spec.backend == "vllm" else "base"


def _runs_for(prefix: str, launch: str, algorithms, backend: str = "hf", extra: tuple[str, ...] = ()):
    return [TrainRun(f"{prefix}_{a}", a, launch, extra, backend, full_only=True) for a in algorithms]


LORA_MERGED = "model.lora={r: 8, alpha: 16, sync: merged}"
LORA_ADAPTER = "model.lora={r: 8, alpha: 16, sync: adapter}"

#: the table, in the order the checks start (the exclusive memory check first: nothing else runs)
TABLE: list[Spec] = [
    # ---- base: the transformers engine on the GPU (longest first after the quick ones) ------
    PerfCheck("memory_speed_0.5B", "hf"),
    EngineCheck("push_streamed", "hf", quick=True),
    TrainRun("single_vineppo", "vineppo", "single_gpu.yaml", ("model.reference_offload=true",), quick=True),
    TrainRun("resume_zero3_ppo", "ppo", "zero3_8gpu.yaml", resume=True, timeout=300.0),
    TrainRun("zero2_offload_ppo", "ppo", "zero2_8gpu_offload.yaml"),
    TrainRun("fsdp2_vineppo", "vineppo", "fsdp_8gpu.yaml"),
    TrainRun("zero3_grpo", "grpo", "zero3_8gpu.yaml"),
    TrainRun("zero2_ppo", "ppo", "zero2_8gpu.yaml"),
    TrainRun("lora_merged_vineppo", "vineppo", "single_gpu.yaml", (LORA_MERGED, LORA_LR)),
    TrainRun("single_ppo", "ppo", "single_gpu.yaml"),
    TrainRun("single_grpo", "grpo", "single_gpu.yaml"),
    *_runs_for("fsdp2", "fsdp_8gpu.yaml", ("ppo", "grpo")),
    *_runs_for("zero2", "zero2_8gpu.yaml", ("vineppo", "grpo")),
    *_runs_for("zero2_offload", "zero2_8gpu_offload.yaml", ("vineppo", "grpo")),
    *_runs_for("zero3", "zero3_8gpu.yaml", ("vineppo", "ppo")),
    # ---- vllm: CUDA vLLM (a user's machine) -------------------------------------------------
    PerfCheck("vllm_memory_speed_0.5B", "vllm"),
    EngineCheck("vllm_sleep_level_1", "vllm", sleep_level=1),
    EngineCheck("vllm_sleep_level_2", "vllm", sleep_level=2, quick=True),
    TrainRun("vllm_single_vineppo", "vineppo", "single_gpu.yaml", ("engine.sleep_level=2",), "vllm", quick=True),
    TrainRun("vllm_lora_merged_grpo", "grpo", "single_gpu.yaml", (LORA_MERGED, LORA_LR, "engine.sleep_level=2"),
             "vllm"),
    TrainRun("vllm_lora_adapter_grpo", "grpo", "single_gpu.yaml", (LORA_ADAPTER, LORA_LR, "engine.sleep_level=1"),
             "vllm"),
    TrainRun("vllm_fsdp2_ppo", "ppo", "fsdp_8gpu.yaml", ("engine.sleep_level=2",), "vllm"),
    TrainRun("vllm_zero3_vineppo", "vineppo", "zero3_8gpu.yaml", ("engine.sleep_level=2",), "vllm"),
    TrainRun("vllm_flash_attention_2", "grpo", "single_gpu.yaml",
             ("model.attn_implementation=flash_attention_2", "engine.sleep_level=2"), "vllm", optional=("flash_attn",)),
]


def select(table: list[Spec], tiers: tuple[str, ...], quick: bool = False, full: bool = False,
           names: list[str] | None = None) -> list[Spec]:
    """The checks of `tiers`: with `quick` only those marked quick, without `full` not the
    full-only ones; `names` (when given) picks checks by name from those."""
    out = [s for s in table if tier_of(s) in tiers and (not quick or s.quick)
           and (full or quick or not getattr(s, "full_only", False))]
    if names:
        unknown = sorted(set(names) - {s.name for s in table})
        if unknown:
            raise TableError(f"unknown check(s) {unknown}; known: {[s.name for s in table]}")
        out = [s for s in table if s.name in names]
    return out


def train_overrides(model_dir: Path, data_dir: Path, algorithm: str, backend: str) -> list[str]:
    """Two short bf16 iterations on the tiny model with a bf16 engine, gradient checkpointing on,
    every iteration checkpointed and its episodes written (the control reads them)."""
    over = [f"algorithm={algorithm}", f"model.name_or_path={model_dir}", "model.tiny_init=false",
            "model.dtype=bfloat16", "model.gradient_checkpointing=true", "data.task=arithmetic",
            f"data.source={data_dir}", "data.validation_size=0", "iterations=2", "save_every=1",
            "episodes.questions_per_iteration=8", "episodes.samples_per_question=4", "ppo.minibatch_size=16",
            "ppo.micro_batch_size=8", "sampling.max_new_tokens=48", "sampling.max_sequence_length=512",
            f"sampling.temperature={TEMPERATURE}", "mc.k=2", "mc.max_states_per_response=4",
            f"engine.backend={backend}", "engine.dtype=bfloat16", "engine.gpu_memory_utilization=0.2",
            "engine.kv_cache_memory_bytes=null", "logging.progress=false", "logging.dump_episodes=true",
            f"optim.lr={TRAIN_LR}", "optim.warmup_ratio=0"]
    return over


def perf_overrides(model_dir: Path, data_dir: Path, backend: str) -> list[str]:
    """The paper run's config on the local ~0.5B model and the arithmetic data (no download);
    the start-up memory check off (the check compares the plan itself)."""
    return [f"model.name_or_path={model_dir}", "data.task=arithmetic", f"data.source={data_dir}",
            f"engine.backend={backend}", "distributed.memory_check=false", "logging.progress=false"]


def child_check(spec: Spec, workdir: Path, inputs: Path, cpu: bool = False, quick: bool = False,
                python: str | None = None) -> Check:
    """The runner's Check for `spec`: this script in child mode. Exclusive (alone on the GPU): every
    vLLM check (vLLM sizes its memory from what is free) and the speed measurement; with `quick`
    the memory check measures no speed and runs beside the others (allocator peaks are per process)."""
    argv = [python or sys.executable, str(SCRIPT), "--child", spec.name, "--work", str(workdir),
            "--inputs", str(inputs)]
    if cpu:
        argv.append("--cpu-rehearsal")
    if quick:
        argv.append("--quick")
    exclusive = spec.backend == "vllm" or (isinstance(spec, PerfCheck) and not quick)
    # training checks start from the SFT'ed tiny model the "inputs" check makes
    after = (INPUTS,) if isinstance(spec, TrainRun) else ()
    return Check(spec.name, tuple(argv), exclusive=exclusive, timeout=spec.timeout, env=CHILD_ENV, after=after)


#: the check that fine-tunes the tiny model every training check starts from
INPUTS = "inputs"
CHILD_ENV = (("TOKENIZERS_PARALLELISM", "false"), ("OMP_NUM_THREADS", "2"), ("HF_HUB_OFFLINE", "1"),
             ("PYTHONPATH", str(ROOT)))


def inputs_check(workdir: Path, inputs: Path, sft_steps: int, cpu: bool = False, python: str | None = None) -> Check:
    """The SFT of the tiny model (on the GPU when there is one), in a process of its own."""
    argv = [python or sys.executable, str(SCRIPT), "--prepare", "--work", str(workdir), "--inputs", str(inputs),
            "--sft-steps", str(sft_steps)]
    if cpu:
        argv.append("--cpu-rehearsal")
    return Check(INPUTS, tuple(argv), timeout=240.0, env=CHILD_ENV)


def with_inputs(checks: list[Check], inputs: Check) -> list[Check]:
    """`inputs` inserted before the first check that waits for it (none: not at all)."""
    first = next((i for i, c in enumerate(checks) if INPUTS in c.after), None)
    return checks if first is None else [*checks[:first], inputs, *checks[first:]]


def by_name(name: str, table: list[Spec] | None = None) -> Spec:
    for s in table if table is not None else TABLE:
        if s.name == name:
            return s
    raise TableError(f"no check named {name!r}")


def validate_table(table: list[Spec] | None = None, root: Path = ROOT) -> int:
    """Raise TableError naming the check and the key unless every check would run as written:
    unique file-safe names, launch files that exist and name a strategy, configs that load with
    the check's overrides (an unknown key or a bad value fails here, not on the GPU), bf16 trainer
    and engine, the backend of its tier, two iterations (one after a push). Returns the number of
    checks validated."""
    from vineppo.config import ConfigError, load_config
    from vineppo.plan import PlanError, read_launch

    table = TABLE if table is None else table
    names = [s.name for s in table]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TableError(f"check names used twice: {dupes}")
    model, data = Path("/nonexistent/model"), Path("/nonexistent/data")
    for s in table:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", s.name):
            raise TableError(f"check {s.name!r}: a name must be a plain file name (letters, digits, _ . -)")
        if s.backend not in ("hf", "vllm"):
            raise TableError(f"check {s.name}: backend {s.backend!r} is neither hf nor vllm")
        if isinstance(s, TrainRun):
            path = root / "launch" / s.launch
            try:
                launch = read_launch(path)
            except PlanError as e:
                raise TableError(f"check {s.name}: {e}") from None
            if launch.processes < 1:
                raise TableError(f"check {s.name}: {path} has no processes")
            overrides = train_overrides(model, data, s.algorithm, s.backend) + list(s.extra)
            try:
                cfg = load_config(TRAIN_CONFIG, overrides)
            except ConfigError as e:
                raise TableError(f"check {s.name}: {e}") from None
            want = {"algorithm": (cfg.algorithm, s.algorithm), "model.dtype": (cfg.model.dtype, "bfloat16"),
                    "engine.dtype": (cfg.engine.dtype, "bfloat16"), "engine.backend": (cfg.engine.backend, s.backend)}
            for key, (got, expected) in want.items():
                if got != expected:
                    raise TableError(f"check {s.name}: {key} is {got!r}, expected {expected!r}")
            if cfg.iterations < 2:
                raise TableError(f"check {s.name}: iterations {cfg.iterations}: no iteration after a push")
        elif isinstance(s, PerfCheck):
            try:
                load_config(PERF_CONFIG, perf_overrides(model, data, s.backend))
            except ConfigError as e:
                raise TableError(f"check {s.name}: {e}") from None
        elif isinstance(s, EngineCheck):
            if s.backend == "vllm" and s.sleep_level not in (1, 2):
                raise TableError(f"check {s.name}: sleep_level {s.sleep_level} (vLLM sleeps at level 1 or 2)")
        else:
            raise TableError(f"check {getattr(s, 'name', s)!r}: unknown kind {type(s).__name__}")
    return len(table)
