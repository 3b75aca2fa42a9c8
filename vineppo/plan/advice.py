"""The verdict and what to change: the first single change under which a run fits, the plan as
a table, the start-up check of `vineppo train`, the check of free GPU memory before the vLLM
engine starts, and the Slurm stop lead."""

from __future__ import annotations

import math
from pathlib import Path

from vineppo.plan.inputs import GIB, Launch, ModelShape, PlanError, launch_files, launch_from_env, model_shape, read_launch
from vineppo.plan.memory import MIN_CONCURRENT_SEQUENCES, Plan, plan_memory, required_headroom

#: seconds before a Slurm time limit that training is asked to stop: one iteration plus one
#: checkpoint save must fit in it (launch/slurm.sbatch). Estimates by policy size, not measured:
#: up to 3B parameters (Rho-1.1B: a few minutes per iteration, a ~20 GB checkpoint) 15 minutes;
#: up to 10B (DeepSeekMath 7B: a VinePPO iteration of tens of minutes, a ~110 GB checkpoint with
#: optimizer state) an hour; larger two hours.
STOP_LEADS = ((3_000_000_000, 900), (10_000_000_000, 3600), (None, 7200))


# ---- what to change -----------------------------------------------------------------------------
def _with(cfg, **changes):
    import copy

    c = copy.deepcopy(cfg)
    for dotted, v in changes.items():
        obj = c
        *path, last = dotted.split("__")
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, last, v)
    return c


def _fits_meaningfully(p: Plan, cfg) -> bool:
    return p.fits and p.concurrent_sequences >= min(MIN_CONCURRENT_SEQUENCES, cfg.engine.max_num_seqs)


def suggest(shape: ModelShape, cfg, launch: Launch, capacity: int,
            launch_files: list[Path] | None = None) -> str | None:
    """The first single change (cheapest first) under which the run fits: the engine's memory
    share, reference offload, a smaller micro-batch, another launch file (fewest processes
    first), then another launch file with reference offload."""
    base = plan_memory(shape, cfg, launch, capacity)
    if _fits_meaningfully(base, cfg):
        return None
    tries: list[tuple[str, object, Launch]] = []
    ms = base.max_gpu_memory_utilization
    if ms is not None and ms != cfg.engine.gpu_memory_utilization:
        tries.append((f"engine.gpu_memory_utilization={ms}", _with(cfg, engine__gpu_memory_utilization=ms), launch))
    if cfg.model.lora is None and not cfg.model.reference_offload:
        tries.append(("model.reference_offload=true", _with(cfg, model__reference_offload=True), launch))
    mb = cfg.ppo.micro_batch_size // 2
    while mb >= 1:
        tries.append((f"ppo.micro_batch_size={mb}", _with(cfg, ppo__micro_batch_size=mb), launch))
        mb //= 2
    others = []
    for f in launch_files or []:
        try:
            other = read_launch(f)
        except PlanError:
            continue
        if other.name != launch.name and other.machines == 1:
            others.append((other.processes, other.name, f, other))
    others.sort(key=lambda t: (t[0], t[1]))
    for _, _, f, other in others:
        tries.append((f"--config_file {f}", cfg, other))
    if cfg.model.lora is None and not cfg.model.reference_offload:
        for _, _, f, other in others:
            tries.append((f"--config_file {f} with model.reference_offload=true",
                          _with(cfg, model__reference_offload=True), other))
    for label, c, lau in tries:
        p = plan_memory(shape, c, lau, capacity)
        if _fits_meaningfully(p, c):
            ms2 = p.max_gpu_memory_utilization
            if not label.startswith("engine.") and ms2 is not None and p.concurrent_sequences < MIN_CONCURRENT_SEQUENCES:
                label += f" and engine.gpu_memory_utilization={ms2}"
            return label
    return "nothing tried fits: more or larger GPUs, or a smaller model"


def make_plan(shape: ModelShape, cfg, launch: Launch, capacity: int,
              launch_files: list[Path] | None = None) -> Plan:
    """`plan_memory` plus the first change that makes it fit (None when it fits)."""
    plan = plan_memory(shape, cfg, launch, capacity)
    plan.suggestion = None if plan.fits else suggest(shape, cfg, launch, capacity, launch_files)
    plan.stop_lead_s = stop_lead_seconds(shape.params)
    return plan


def stop_lead_seconds(params: int) -> int:
    """Seconds before a Slurm time limit to ask a run of a `params`-parameter policy to stop
    (`STOP_LEADS`; launch/slurm.sbatch reads it from `vineppo plan --json` unless STOP_LEAD is set)."""
    for limit, lead in STOP_LEADS:
        if limit is None or params <= limit:
            return lead
    raise AssertionError("unreachable")


def format_plan(plan: Plan) -> str:
    g = lambda b: f"{b / GIB:6.1f}"  # noqa: E731
    L = plan.launch
    lines = [f"{L.name}: {L.strategy}, {L.processes} process(es); policy {plan.policy_params:,} parameters"
             + (f", critic {plan.critic_params:,}" if plan.critic_params else ""),
             f"per GPU (GiB, capacity {plan.capacity / GIB:.1f}):"]
    for p in plan.phases:
        parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in p.parts.items() if v)
        lines.append(f"  {p.name:<13}{g(p.total)}  ({parts})")
    lines.append(f"KV cache: {plan.kv_cache_tokens:,} tokens, {plan.concurrent_sequences} concurrent full-length "
                 f"sequences; largest engine.gpu_memory_utilization that fits: {plan.max_gpu_memory_utilization}")
    lines.append(f"host RAM per node (GiB): load {plan.host_load_per_node / GIB:.1f}, per push "
                 f"{plan.host_push_per_node / GIB:.1f}, resident {plan.host_resident_per_node / GIB:.1f}")
    lines += [f"note: {n}" for n in plan.notes]
    verdict = "fits" if plan.fits else "does NOT fit"
    lines.append(f"verdict: {verdict} (peak {plan.peak / GIB:.1f} GiB in {plan.peak_phase}, "
                 f"{plan.headroom / GIB:.1f} GiB left free, {plan.required_headroom / GIB:.1f} needed)"
                 + (f"; first change that fits: {plan.suggestion}" if plan.suggestion else ""))
    return "\n".join(lines)


# ---- start-up check of `vineppo train` ----------------------------------------------------------
def refusal(cfg, shape: ModelShape, launch: Launch, capacity: int) -> str | None:
    """One line saying what to change when the run does not fit, else None."""
    plan = make_plan(shape, cfg, launch, capacity, launch_files())
    if plan.fits:
        return None
    return (f"this run needs {plan.peak / GIB:.1f} GiB per GPU in its {plan.peak_phase} phase, the GPU has "
            f"{capacity / GIB:.1f} GiB of which {plan.required_headroom / GIB:.1f} must stay free (NCCL, "
            f"fragmentation; vineppo plan shows every phase); change: {plan.suggestion} "
            f"(or distributed.memory_check=false to start anyway)")


def check_memory_at_startup(cfg) -> None:
    """`vineppo train` on CUDA: refuse a run whose plan does not fit (`distributed.memory_check`)."""
    import torch

    if not torch.cuda.is_available() or not cfg.distributed.memory_check:
        return
    capacity = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    msg = refusal(cfg, model_shape(cfg.model.name_or_path), launch_from_env(), capacity)
    if msg is not None:
        raise MemoryPlanError(msg)


class MemoryPlanError(RuntimeError):
    pass


# ---- free memory before the vLLM engine starts --------------------------------------------------
def engine_share_shortfall(free: int, total: int, share: float) -> str | None:
    """Before a vLLM engine starts on a GPU with `free` of `total` bytes free: vLLM takes `share` x
    `total` (`engine.gpu_memory_utilization`) and refuses to start when less is free. Returns one
    line saying what to change (the largest share that leaves the plan's headroom free, the other
    ways to free memory), or None when the share fits."""
    if not 0 < share <= 1:
        raise ValueError(f"engine.gpu_memory_utilization must be in (0, 1], got {share}")
    need = math.ceil(share * total)  # vLLM's own request: ceil(total x share)
    if free >= need:
        return None
    g = lambda b: f"{b / GIB:.1f}"  # noqa: E731
    largest = math.floor(100 * (free - required_headroom(total)) / total) / 100
    lower = (f"engine.gpu_memory_utilization={largest} (keeps {g(required_headroom(total))} GiB free; "
             f"a smaller KV cache)" if largest > 0 else "no smaller engine share leaves the headroom free")
    return (f"the vLLM engine's share engine.gpu_memory_utilization={share} needs {g(need)} GiB of this GPU, "
            f"{g(free)} of its {g(total)} GiB are free (short by {g(need - free)} GiB: the trainer's state, or "
            f"another process on this GPU, see nvidia-smi). Change: {lower}; in training also "
            f"model.reference_offload=true or a launch file with more processes (`vineppo plan` shows what "
            f"each phase needs)")


def check_engine_memory(share: float) -> None:
    """On CUDA, before a vLLM engine is built: stop with `engine_share_shortfall`'s advice when this
    process's GPU has less free memory than the engine's share (`torch.cuda.mem_get_info`)."""
    import torch

    if not torch.cuda.is_available():
        return
    free, total = torch.cuda.mem_get_info()
    msg = engine_share_shortfall(int(free), int(total), float(share))
    if msg is not None:
        raise MemoryPlanError(msg)
