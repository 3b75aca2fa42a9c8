"""The verdict and what to change: the first single change under which a run fits, the plan as
a table, and the start-up check of `vineppo train`."""

from __future__ import annotations

from pathlib import Path

from vineppo.plan.inputs import GIB, Launch, ModelShape, PlanError, launch_files, launch_from_env, model_shape, read_launch
from vineppo.plan.memory import MIN_CONCURRENT_SEQUENCES, Plan, plan_memory


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
    return plan


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
    lines.append(f"verdict: {verdict} (peak {plan.peak / GIB:.1f} GiB in {plan.peak_phase})"
                 + (f"; first change that fits: {plan.suggestion}" if plan.suggestion else ""))
    return "\n".join(lines)


# ---- start-up check of `vineppo train` ----------------------------------------------------------
def refusal(cfg, shape: ModelShape, launch: Launch, capacity: int) -> str | None:
    """One line saying what to change when the run does not fit, else None."""
    plan = make_plan(shape, cfg, launch, capacity, launch_files())
    if plan.fits:
        return None
    return (f"this run needs {plan.peak / GIB:.1f} GiB per GPU in its {plan.peak_phase} phase, the GPU has "
            f"{capacity / GIB:.1f} GiB (vineppo plan shows every phase); change: {plan.suggestion} "
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
