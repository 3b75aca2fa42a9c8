"""The evaluation grid: which checkpoints of a run are evaluated and compared.

The official code deletes every checkpoint whose iteration is not a multiple of
`checkpoint_keep_steps` (40 for Rho-1.1B, 60 for DeepSeekMath-7B) before evaluating, so every
method is judged on one grid, whatever its save interval. A best-of-N selection over a noisy
curve rises with N: a run saved every 10 iterations judged on all its checkpoints gets 4x the
draws of one saved every 40. So `vineppo eval --every N` and `vineppo compare --iteration-grid N`
keep the iterations divisible by N plus each run's last (and the initial model, iteration 0);
compare's default N is the coarsest interval among the runs compared (`default_grid`), and a grid
a run's checkpoints cannot fill is refused (`check_grid`).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from vineppo.evaluate.settings import EvalError


class GridError(EvalError):
    """A grid that a run's checkpoints cannot fill."""


def on_grid(iteration: int, every: int | None, last: int | None) -> bool:
    """True if `iteration` is evaluated on the grid of `every` iterations (None: every checkpoint);
    `last` (the run's last checkpoint) is always on it."""
    return every is None or iteration % every == 0 or iteration == last


def save_interval(run_cfg: Mapping[str, Any], iterations: Iterable[int]) -> int | None:
    """How often the run saved a checkpoint: config.yaml's `save_every`, else the greatest common
    divisor of its checkpoint iterations (the last one excluded: training always saves it); None
    when neither tells."""
    value = run_cfg.get("save_every")
    if isinstance(value, int) and value >= 1:
        return value
    its = sorted({int(i) for i in iterations if int(i) > 0})[:-1]
    return math.gcd(*its) if its else None


def declared_grid(run_cfg: Mapping[str, Any]) -> int | None:
    """The run's own grid (config.yaml `eval_every`, e.g. 40 in the Rho-1.1B paper configs)."""
    value = run_cfg.get("eval_every")
    return value if isinstance(value, int) and value >= 1 else None


def default_grid(intervals: Iterable[int | None]) -> int | None:
    """The coarsest of the runs' intervals (each run's `eval_every`, else its save interval), so that
    no run gets more draws than another; None when no run tells."""
    known = [i for i in intervals if i is not None]
    return max(known) if known else None


def check_grid(every: int | None, interval: int | None, run: str, flag: str) -> None:
    """Refuse a grid `every` that is not a multiple of the run's save `interval` (it would ask for
    checkpoints the run does not have)."""
    if every is None:
        return
    if every < 1:
        raise GridError(f"{flag} must be >= 1, got {every}")
    if interval is not None and every % interval != 0:
        raise GridError(f"{run} saved a checkpoint every {interval} iterations, so it has none on a grid of "
                        f"{every}: use {flag} {interval} or a multiple of it")
