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
import queue as queue_module
import traceback
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


def _run_share(queue, index: int, devices: str | None, threads: int, fn: Callable[..., list], args: tuple,
               kwargs: dict) -> None:
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices  # before anything in this fresh process touches CUDA
    try:
        import torch

        torch.set_num_threads(threads)  # the caller's CPU threads, split between the processes
        queue.put((index, fn(*args, **kwargs), None))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        queue.put((index, None, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def run_shares(fn: Callable[..., list], shares: Sequence[Sequence[Any]], devices: Sequence[str | None],
               args: tuple = (), kwargs: dict | None = None) -> list[list]:
    """`fn(share, *args, **kwargs)` for every share, each in a fresh spawned process (CUDA state is
    per process) pinned to its `devices` entry (None: inherit). Returns the results in share order;
    raises RuntimeError naming the share when a process fails or dies.

    Plain (non-daemon) processes, not a Pool: a tensor-parallel vLLM engine starts worker
    processes of its own, which a daemonic pool worker may not."""
    import torch

    if len(devices) < len(shares):
        raise ValueError(f"{len(shares)} shares but devices for {len(devices)}")
    threads = max(1, torch.get_num_threads() // len(shares))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_run_share, args=(queue, i, d, threads, fn, (list(share), *args), dict(kwargs or {})))
             for i, (share, d) in enumerate(zip(shares, devices))]
    for p in procs:
        p.start()
    results: dict[int, list] = {}
    try:
        while len(results) < len(procs):
            try:
                index, value, error = queue.get(timeout=5)
            except queue_module.Empty:
                dead = [i for i, p in enumerate(procs) if i not in results and p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"evaluation process {dead[0]} (devices {devices[dead[0]]}) died with exit "
                                       f"code {procs[dead[0]].exitcode}") from None
                continue
            if error is not None:
                raise RuntimeError(f"evaluation process {index} (devices {devices[index]}) failed: {error}")
            results[index] = value
    finally:
        for p in procs:
            p.join(timeout=60 if len(results) == len(procs) else 1)
            if p.is_alive():
                p.terminate()
    return [results[i] for i in range(len(procs))]
