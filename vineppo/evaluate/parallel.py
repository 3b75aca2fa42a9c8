"""Several checkpoints at once: one evaluation process per GPU (or per group of
`tensor_parallel_size` GPUs), each pinned with CUDA_VISIBLE_DEVICES and evaluating its share of the
run's checkpoints with its own engine. A checkpoint's results do not depend on which process
evaluated it (each evaluation seeds its own sampling), so they equal the one-process sweep's.

Evaluating one small model at a time with TP=8 leaves most of each GPU idle and pays the
tensor-parallel all-reduces on every token; eight independent engines do not.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from typing import Any, Callable, Sequence, TypeVar

log = logging.getLogger("vineppo.evaluate")

T = TypeVar("T")


def visible_devices() -> list[str]:
    """The CUDA devices this process may use (its CUDA_VISIBLE_DEVICES, else all), as ids."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001 - no CUDA at all
        return []


def device_groups(devices: Sequence[str], tensor_parallel_size: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES values of the worker processes: consecutive groups of
    `tensor_parallel_size` devices (devices left over are unused)."""
    tp = max(1, int(tensor_parallel_size))
    return [",".join(devices[i: i + tp]) for i in range(0, len(devices) - tp + 1, tp)]


def default_workers(tensor_parallel_size: int, n_jobs: int) -> int:
    """One worker per GPU group of the node, no more than there are checkpoints; 1 without CUDA."""
    return max(1, min(n_jobs, len(device_groups(visible_devices(), tensor_parallel_size))))


def assign(jobs: Sequence[T], workers: int) -> list[list[T]]:
    """Round-robin shares: worker w gets jobs w, w + workers, ... (jobs come sorted by iteration,
    so each worker gets early and late checkpoints alike). Empty shares are dropped."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return [list(jobs[w::workers]) for w in range(workers) if jobs[w::workers]]


def _run_share(devices: str | None, threads: int, fn: Callable[..., list], args: tuple, kwargs: dict) -> list:
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices  # before anything in this fresh process touches CUDA
    import torch

    torch.set_num_threads(threads)  # the caller's CPU threads, split between the processes
    return fn(*args, **kwargs)


def run_shares(fn: Callable[..., list], shares: Sequence[Sequence[Any]], devices: Sequence[str | None],
               args: tuple = (), kwargs: dict | None = None) -> list[list]:
    """`fn(share, *args, **kwargs)` for every share, each in a fresh spawned process (CUDA state is
    per process) pinned to its `devices` entry (None: inherit). Returns the results in share order."""
    if len(devices) < len(shares):
        raise ValueError(f"{len(shares)} shares but devices for {len(devices)}")
    import torch

    threads = max(1, torch.get_num_threads() // len(shares))
    ctx = mp.get_context("spawn")
    with ctx.Pool(processes=len(shares), maxtasksperchild=1) as pool:
        pending = [pool.apply_async(_run_share, (d, threads, fn, (list(share), *args), dict(kwargs or {})))
                   for share, d in zip(shares, devices)]
        return [p.get() for p in pending]
