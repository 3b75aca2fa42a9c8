"""Which checkpoint a run reports (best on validation, never test), its peak, and what it needed to
reach another run's peak: the paper's efficiency measures (spec §5)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

from vineppo.compare.runs import Run

log = logging.getLogger(__name__)

NO_VALIDATION = "no validation results"


def best_on_validation(run: Run) -> int | None:
    """Iteration of the checkpoint with the highest validation pass@1 (ties: the earlier one).

    None, with a loud warning, when the run has no validation results: the reported checkpoint is
    never selected on test.
    """
    curve = run.curve("validation")
    if not curve:
        log.warning("%s: %s — no checkpoint selected (run `vineppo eval --run %s --split validation`); "
                    "the test split is never used for selection", run.label, NO_VALIDATION, run.path)
        return None
    best = max(p for _, p in curve)
    return min(it for it, p in curve if p == best)


def peak_test(run: Run) -> tuple[int, float] | None:
    """(iteration, pass@1) of the run's highest test pass@1 (the paper's "peak"), earliest on ties."""
    curve = run.curve("test")
    if not curve:
        return None
    best = max(p for _, p in curve)
    return min(it for it, p in curve if p == best), best


def first_reaching(run: Run, target: float) -> int | None:
    """First evaluated iteration whose test pass@1 is at least `target` (None if never)."""
    for it, p in run.curve("test"):
        if p >= target - 1e-12:
            return it
    return None


def reference_runs(runs: Sequence[Run]) -> dict[str | None, Run]:
    """task -> the PPO run whose peak is the target for runs of that task (the first PPO run given)."""
    refs: dict[str | None, Run] = {}
    for r in runs:
        if r.algorithm == "ppo" and r.task not in refs:
            refs[r.task] = r
    return refs


@dataclass
class RunSummary:
    label: str
    algorithm: str
    task: str | None
    iterations: int
    wallclock_hours: float | None
    selected_iteration: int | None
    selected_validation: float | None
    selected_test: float | None
    last_iteration: int | None
    last_test: float | None
    peak_test: float | None
    ppo_peak: float | None
    iterations_to_ppo_peak: int | None
    hours_to_ppo_peak: float | None
    #: PPO's iterations (hours) to its peak / this run's
    iteration_speedup: float | None
    wallclock_speedup: float | None
    #: tokens generated over the whole run (episodes + MC rollouts)
    generated_tokens: float | None = None


@dataclass
class Reach:
    """What `run` needed to first reach `target`'s peak test pass@1 (None: never reached)."""
    run: str
    target: str
    target_peak: float
    iteration: int | None
    hours: float | None
    generated_tokens: float | None


def reach_table(runs: Sequence[Run]) -> list[Reach]:
    """For every ordered pair of runs of the same task, the compute `run` spent to first reach
    `target`'s peak test pass@1 (iteration, wall-clock hours, generated tokens)."""
    out = []
    for target in runs:
        peak = peak_test(target)
        if peak is None:
            continue
        for run in runs:
            if run is target or run.task != target.task:
                continue
            it = first_reaching(run, peak[1])
            cum, toks = run.cumulative_seconds(), run.cumulative_generated_tokens()
            out.append(Reach(run.label, target.label, peak[1], it,
                             cum[it] / 3600 if it is not None and it in cum else None,
                             toks.get(it) if it is not None else None))
    return out


def summarize_run(run: Run, ref: Run | None) -> RunSummary:
    selected = best_on_validation(run)
    test = run.evals.get("test", {})
    val = run.evals.get("validation", {})
    test_curve = run.curve("test")
    last = test_curve[-1] if test_curve else None
    peak = peak_test(run)
    cum = run.cumulative_seconds()
    ref_peak = peak_test(ref) if ref is not None else None
    reach = first_reaching(run, ref_peak[1]) if ref_peak is not None else None
    hours = cum.get(reach) / 3600 if reach is not None and reach in cum else None
    it_speed = wc_speed = None
    if ref_peak is not None and reach is not None:
        ref_cum = ref.cumulative_seconds()
        it_speed = ref_peak[0] / reach if reach > 0 else None
        ref_hours = ref_cum.get(ref_peak[0], math.nan) / 3600
        wc_speed = ref_hours / hours if hours and not math.isnan(ref_hours) else None
    return RunSummary(
        label=run.label, algorithm=run.algorithm, task=run.task, iterations=run.iterations,
        wallclock_hours=cum[max(cum)] / 3600 if run.metrics else None,
        selected_iteration=selected,
        selected_validation=float(val[selected]["pass@1"]) if selected is not None else None,
        selected_test=float(test[selected]["pass@1"]) if selected is not None and selected in test else None,
        last_iteration=last[0] if last else None, last_test=last[1] if last else None,
        peak_test=peak[1] if peak else None, ppo_peak=ref_peak[1] if ref_peak else None,
        iterations_to_ppo_peak=reach, hours_to_ppo_peak=hours,
        iteration_speedup=it_speed, wallclock_speedup=wc_speed,
        generated_tokens=(toks[max(toks)] if (toks := run.cumulative_generated_tokens()) else None),
    )
