"""The value analyses of `vineppo compare` (the paper's §6), from the value probe's records
(`vineppo.probe.records`, runs trained with `probe.every`) and the episode dumps
(`logging.dump_episodes`):

- `value_estimate_vs_truth.png`: per run and estimator, a 2-D histogram of the estimate against the
  truth (`probe.k` rollouts) over every probed state;
- `value_error_by_step.png`: mean |estimate − truth| by the state's step index k, per run and
  estimator (the paper: the critic's error grows along the chain, MC's does not);
- `ranking_accuracy_vs_iteration.png`: per probe, the share of pairs of alternative next steps an
  estimator orders as the truth does (ties wrong, `vineppo.probe.ranking_score`), with the 50 %
  chance line;
- `step_advantages.png`: per algorithm, the histogram of step advantages in the dumped episodes
  (`step_advantages_of`);
- a Markdown section for compare.md: per run and estimator, probed states, MAE, scored pairs and
  ranking accuracy over every probe.

Estimators: `mc` (VinePPO: its own MC values; other runs: the probe's `mc.k`-rollout estimate at the
same states) and `critic` (PPO). A run without records or dumps is left out of the plot it lacks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from vineppo.advantages import vine_step_advantages
from vineppo.compare.plots import _finish, _pyplot
from vineppo.compare.runs import CompareError, Run
from vineppo.compare.tables import markdown_table
from vineppo.probe import ESTIMATORS, RecordsError, ranking_score, read_records

VALUE_PLOT_FILES = {
    "value_estimate_vs_truth": "value_estimate_vs_truth.png",
    "value_error_by_step": "value_error_by_step.png",
    "ranking_accuracy_vs_iteration": "ranking_accuracy_vs_iteration.png",
    "step_advantages": "step_advantages.png",
}
ESTIMATOR_NAMES = {"mc": "MC estimate", "critic": "critic"}
VALUE_HEADER = ["run", "algorithm", "estimator", "probed states", "MAE", "ranked states", "scored pairs",
                "ranking accuracy"]
#: bins per axis of the estimate-vs-truth histograms
HIST_BINS = 20


def _pairs(records: Sequence[dict], estimator: str) -> list[tuple[float, float]]:
    """(truth, estimate) of every record that has both."""
    return [(float(r["truth"]), float(r[estimator])) for r in records
            if r.get(estimator) is not None and r.get("truth") is not None]


def mean_abs_error(records: Sequence[dict], estimator: str) -> tuple[float | None, int]:
    """(mean |estimate − truth|, states) over the state records that have an `estimator` value."""
    pts = _pairs(records, estimator)
    return (float(np.mean([abs(e - t) for t, e in pts])) if pts else None), len(pts)


def mae_by_step(records: Sequence[dict], estimator: str) -> dict[int, tuple[float, int]]:
    """step index k → (mean |estimate − truth| over the states s_k with an `estimator` value, their number)."""
    errs: dict[int, list[float]] = {}
    for r in records:
        if r.get(estimator) is not None and r.get("truth") is not None:
            errs.setdefault(int(r["step"]), []).append(abs(float(r[estimator]) - float(r["truth"])))
    return {k: (float(np.mean(v)), len(v)) for k, v in sorted(errs.items())}


def ranking_by_iteration(alternatives: Sequence[dict], estimator: str) -> dict[int, tuple[int, int]]:
    """iteration → (correct, scored) pairs of alternative steps, summed over that probe's ranked
    states (every process's: the records are merged)."""
    out: dict[int, tuple[int, int]] = {}
    for r in alternatives:
        est = r.get(estimator)
        if est is None:
            continue
        c, n = ranking_score(r["truth"], est)
        c0, n0 = out.get(r["iteration"], (0, 0))
        out[r["iteration"]] = (c0 + c, n0 + n)
    return dict(sorted(out.items()))


def step_advantages_of(episode: dict) -> list[float]:
    """The step advantages of one dumped episode: the ones it was trained with where it has them
    (VinePPO's A_k = r_k + V̂(s_{k+1}) − V̂(s_k); GRPO / RLOO: the response's advantage on every
    step), PPO's from its critic by the same formula (`critic_step_values`, terminal V = 0);
    [] when the dump has neither."""
    if episode.get("step_advantages") is not None:
        return [float(a) for a in episode["step_advantages"]]
    values = episode.get("critic_step_values")
    if not values:
        return []
    rewards = [0.0] * len(values)
    rewards[-1] = float(episode.get("reward", 0.0))
    return vine_step_advantages(values, rewards)


def read_step_advantages(run_dir: Path) -> list[float]:
    """Every step advantage in the run's episode dumps (episodes/iter_*.rank*.jsonl)."""
    out: list[float] = []
    for path in sorted((run_dir / "episodes").glob("iter_*.rank*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                out += step_advantages_of(json.loads(line))
            except json.JSONDecodeError as e:
                if number == len(lines):
                    continue  # cut short by a crash
                raise CompareError(f"{path}, line {number}: invalid JSON ({e.msg})") from None
    return out


@dataclass
class RunValues:
    run: Run
    states: list[dict] = field(default_factory=list)
    alternatives: list[dict] = field(default_factory=list)
    step_advantages: list[float] = field(default_factory=list)

    def estimators(self) -> list[str]:
        return [e for e in ESTIMATORS if any(r.get(e) is not None for r in self.states + self.alternatives)]


def load_values(run: Run) -> RunValues:
    try:
        states, alts = read_records(run.path, "states"), read_records(run.path, "alternatives")
    except RecordsError as e:
        raise CompareError(str(e)) from None
    return RunValues(run, states, alts, read_step_advantages(run.path))


def value_rows(values: Sequence[RunValues]) -> list[list[str]]:
    rows = []
    for v in values:
        for est in v.estimators():
            mae, n = mean_abs_error(v.states, est)
            counts = ranking_by_iteration(v.alternatives, est).values()
            c, p = sum(cn[0] for cn in counts), sum(cn[1] for cn in counts)
            ranked = sum(1 for r in v.alternatives if r.get(est) is not None)
            rows.append([v.run.label, v.run.algorithm, ESTIMATOR_NAMES[est], str(n),
                         "—" if mae is None else f"{mae:.3f}", str(ranked), str(p),
                         f"{100 * c / p:.1f} %" if p else "—"])
    return rows


def _integer_x(ax, xs: Sequence[int]) -> None:
    """Whole-number ticks on x (iterations, step indices), one unit either side of a lone value."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if xs and min(xs) == max(xs):
        ax.set_xlim(min(xs) - 1, max(xs) + 1)


def plot_estimate_vs_truth(values: Sequence[RunValues], out: Path) -> Path | None:
    """One 2-D histogram per (run, estimator): truth on x, estimate on y, the diagonal dotted."""
    panels = [(v, est, _pairs(v.states, est)) for v in values for est in v.estimators()]
    panels = [p for p in panels if p[2]]
    if not panels:
        return None
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, (v, est, pts) in zip(axes.flat, panels):
        truth, estimate = np.array(pts).T
        lo, hi = min(0.0, float(estimate.min())), max(1.0, float(estimate.max()))
        _, _, _, image = ax.hist2d(truth, estimate, bins=HIST_BINS, range=[[0, 1], [lo, hi]], cmin=1, cmap="viridis")
        fig.colorbar(image, ax=ax, label="states")
        ax.plot([0, 1], [0, 1], ":", color="gray", linewidth=1)
        mae = float(np.mean(np.abs(estimate - truth)))
        ax.set_title(f"{v.run.label}: {ESTIMATOR_NAMES[est]}\nMAE {mae:.3f}, {len(pts)} states", fontsize=9)
        ax.set_xlabel("true value (probe rollouts)")
        ax.set_ylabel("estimate")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def plot_error_by_step(values: Sequence[RunValues], out: Path) -> Path | None:
    """Mean |estimate − truth| against the step index k of the state, per run (colour) and
    estimator (MC solid, critic dashed)."""
    series = [(i, v, est, mae_by_step(v.states, est)) for i, v in enumerate(values) for est in v.estimators()]
    series = [s for s in series if s[3]]
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, v, est, by_step in series:
        ax.plot(list(by_step), [m for m, _ in by_step.values()], "-o" if est == "mc" else "--s", color=f"C{i}",
                markersize=3, label=f"{v.run.label} ({ESTIMATOR_NAMES[est]})")
    _integer_x(ax, [k for *_, by_step in series for k in by_step])
    return _finish(ax, fig, out, "Value error along the reasoning chain", "step index k of the state s_k",
                   "mean |V estimate − V true|")


def plot_ranking_accuracy(values: Sequence[RunValues], out: Path) -> Path | None:
    """Ranking accuracy of alternative next steps (%) per probe, per run and estimator; chance 50 %.
    Written whenever a run ranked any state, saying so when no pair was scored. Pairs are scored as
    the official analyzer does (`ranking_score`): every pair, ties in the estimate or in the truth
    wrong, so a random order scores 50 % of the pairs of differing truth and less overall."""
    series = []
    for i, v in enumerate(values):
        for est in v.estimators():
            pts = [(it, 100 * c / n) for it, (c, n) in ranking_by_iteration(v.alternatives, est).items() if n]
            if pts:
                series.append((i, v, est, pts))
    if not any(v.alternatives for v in values):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, v, est, pts in series:
        ax.plot(*zip(*pts), "-o" if est == "mc" else "--s", color=f"C{i}", markersize=3,
                label=f"{v.run.label} ({ESTIMATOR_NAMES[est]})")
    ax.axhline(50, color="gray", linestyle=":", linewidth=1, label="chance (50 %)")
    ax.set_ylim(0, 100)
    _integer_x(ax, [it for *_, pts in series for it, _ in pts])
    if not series:
        ranked = sum(len(v.alternatives) for v in values)
        ax.text(0.5, 0.25, f"{ranked} ranked state(s), but no pair of alternatives to score",
                transform=ax.transAxes, ha="center", va="center", fontsize=9)
    return _finish(ax, fig, out, "Ranking alternative next steps (ties count wrong)", "iteration",
                   "pairs ordered strictly as the truth (%)")


def plot_step_advantages(values: Sequence[RunValues], out: Path) -> Path | None:
    """Density histogram of the step advantages of every dumped episode, one per algorithm (its
    runs pooled)."""
    by_algo: dict[str, list[float]] = {}
    for v in values:
        if v.step_advantages:
            by_algo.setdefault(v.run.algorithm, []).extend(v.step_advantages)
    if not by_algo:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    edges = np.histogram_bin_edges(np.concatenate([np.asarray(a) for a in by_algo.values()]), bins=40)
    for i, (algo, advs) in enumerate(by_algo.items()):
        ax.hist(advs, bins=edges, density=True, histtype="step", linewidth=1.5, color=f"C{i}",
                label=f"{algo} ({len(advs)} steps)")
    ax.set_yscale("log")
    return _finish(ax, fig, out, "Step advantages in the dumped episodes",
                   "A_k = r_k + V(s_{k+1}) − V(s_k)   (PPO: its critic's V; GRPO / RLOO: the response's)",
                   "density (log)")


@dataclass
class ValueAnalyses:
    plots: dict[str, Path]
    #: the compare.md section ("" when no run was probed)
    markdown: str


def value_analyses(runs: Sequence[Run], out: Path) -> ValueAnalyses:
    """Read every run's probe records and episode dumps; write the plots that have data."""
    values = [load_values(r) for r in runs]
    plots: dict[str, Path] = {}
    for key, fn in (("value_estimate_vs_truth", plot_estimate_vs_truth), ("value_error_by_step", plot_error_by_step),
                    ("ranking_accuracy_vs_iteration", plot_ranking_accuracy),
                    ("step_advantages", plot_step_advantages)):
        path = fn(values, out / VALUE_PLOT_FILES[key])
        if path is not None:
            plots[key] = path
    rows = value_rows(values)
    md = ""
    if rows:
        md = ("\n## Value estimates (value probe)\n\n" + markdown_table(VALUE_HEADER, rows)
              + "\nOver every probe of the run: MAE = mean |estimate − truth| at the probed states (truth: the "
              "probe's `probe.k` rollouts); ranking accuracy = share of the pairs of alternative next steps that "
              "the estimator orders strictly as the truth does (as the official analyzer: ties in the estimate or "
              "in the truth count wrong; a random order scores 50 % of the pairs of differing truth). "
              "MC estimate: VinePPO's own values at the states, `mc.k` fresh rollouts elsewhere.\n")
    return ValueAnalyses(plots, md)
