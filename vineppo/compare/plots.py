"""The compare plots (matplotlib, Agg): test pass@1 against iterations, wall-clock, generated tokens
and KL; the train reward; the probe's value error."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from vineppo.compare.runs import Run

#: iterations of `train/kl` averaged for the accuracy-vs-KL plot
KL_WINDOW = 5
#: moving-average window of the train-reward plot
REWARD_SMOOTHING = 10
PLOT_FILES = {
    "test_vs_iteration": "test_pass1_vs_iteration.png",
    "test_vs_wallclock": "test_pass1_vs_wallclock.png",
    "test_vs_generated_tokens": "test_pass1_vs_generated_tokens.png",
    "reward_vs_iteration": "train_reward_vs_iteration.png",
    "accuracy_vs_kl": "test_pass1_vs_kl.png",
}
#: written only when a run logged the value-quality probe (`probe.every`)
VALUE_ERROR_PLOT = "value_error_vs_iteration.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _kl_at(run: Run, iteration: int) -> float | None:
    """Mean `train/kl` over the KL_WINDOW iterations up to `iteration` (0 for the initial model)."""
    if iteration == 0:
        return 0.0
    vals = [float(r["train/kl"]) for r in run.metrics
            if iteration - KL_WINDOW < r["iteration"] <= iteration and "train/kl" in r]
    return sum(vals) / len(vals) if vals else None


def _finish(ax, fig, path: Path, title: str, xlabel: str, ylabel: str) -> Path:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_test_vs(runs: Sequence[Run], selected: dict[str, int | None], out: Path, *, wallclock: bool,
                 ppo_peaks: dict[str | None, float], tokens: bool = False) -> Path:
    """Test pass@1 (%) per checkpoint vs iteration, wall-clock hours or (`tokens`) millions of
    generated tokens; validation dashed; the selected (best-on-validation) checkpoint circled;
    PPO's peak as a dotted line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs):
        color = f"C{i}"
        cum = run.cumulative_seconds()
        toks = run.cumulative_generated_tokens()

        def x_of(it: int) -> float | None:
            if tokens:
                return toks[it] / 1e6 if it in toks else None
            return (cum[it] / 3600 if it in cum else None) if wallclock else it

        for split, style in (("test", "-o"), ("validation", "--")):
            pts = [(x_of(it), 100 * p) for it, p in run.curve(split) if x_of(it) is not None]
            if pts:
                ax.plot(*zip(*pts), style, color=color, markersize=3, alpha=1.0 if split == "test" else 0.5,
                        label=f"{run.label} ({run.algorithm}) {split}")
        sel = selected.get(run.label)
        test = dict(run.curve("test"))
        if sel is not None and sel in test and x_of(sel) is not None:
            ax.plot([x_of(sel)], [100 * test[sel]], "o", markersize=10, markerfacecolor="none", color=color)
    for task, peak in ppo_peaks.items():
        ax.axhline(100 * peak, color="gray", linestyle=":", linewidth=1, label=f"PPO peak ({task})")
    xlabel = ("generated tokens (millions; episodes + MC rollouts)" if tokens
              else "wall-clock (hours of training)" if wallclock else "iteration")
    title = ("Test pass@1 vs " + ("generated tokens" if tokens else "wall-clock" if wallclock else "iteration")
             + " (circle: selected on validation)")
    return _finish(ax, fig, out, title, xlabel, "pass@1 (%)")


def plot_reward(runs: Sequence[Run], out: Path) -> Path:
    """Train reward (mean over the iteration's episodes) vs iteration: raw faint, smoothed solid."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs):
        pts = [(r["iteration"], float(r["reward/mean"])) for r in run.metrics if "reward/mean" in r]
        if not pts:
            continue
        its, vals = zip(*pts)
        ax.plot(its, vals, color=f"C{i}", alpha=0.25, linewidth=0.8)
        ax.plot(its, _moving_average(vals, REWARD_SMOOTHING), color=f"C{i}", label=f"{run.label} ({run.algorithm})")
    return _finish(ax, fig, out, f"Train reward (moving average over {REWARD_SMOOTHING} iterations)",
                   "iteration", "mean reward (train accuracy)")


def plot_accuracy_vs_kl(runs: Sequence[Run], out: Path) -> Path:
    """Test pass@1 (%) per checkpoint vs the KL to the reference around that iteration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(runs):
        pts = [(kl, 100 * p) for it, p in run.curve("test") if (kl := _kl_at(run, it)) is not None]
        if pts:
            pts.sort()
            ax.plot(*zip(*pts), "-o", color=f"C{i}", markersize=3, label=f"{run.label} ({run.algorithm})")
    if any(ax.get_lines()):
        ax.set_xscale("symlog", linthresh=1e-3)
    return _finish(ax, fig, out, f"Test pass@1 vs KL to the reference (train/kl, mean of {KL_WINDOW} iterations)",
                   "KL(policy ‖ reference) per sequence", "pass@1 (%)")


def plot_value_error(runs: Sequence[Run], out: Path) -> Path | None:
    """The value-quality probe: mean |value estimate − k-rollout truth| vs iteration, per run (VinePPO:
    its MC estimate, solid; PPO: its critic, dashed). None when no run logged the probe."""
    series = []
    for i, run in enumerate(runs):
        for key, style in (("probe/mc_abs_error", "-o"), ("probe/critic_abs_error", "--s")):
            pts = [(r["iteration"], float(r[key])) for r in run.metrics
                   if key in r and r[key] is not None and not math.isnan(float(r[key]))]
            if pts:
                series.append((i, run, key, style, pts))
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run, key, style, pts in series:
        what = "MC estimate" if key == "probe/mc_abs_error" else "critic"
        ax.plot(*zip(*pts), style, color=f"C{i}", markersize=3, label=f"{run.label} ({what})")
    return _finish(ax, fig, out, "Value error against the probe's ground truth", "iteration",
                   "mean |V estimate − V true|")
