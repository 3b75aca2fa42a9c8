"""Compare runs: a table (console + `compare.md`) and four PNG plots, from files only.

Inputs per run directory (written by `vineppo train` and `vineppo eval`):
- `config.yaml` (algorithm, task),
- `metrics.jsonl` (per iteration: `seconds`, `reward/mean`, `train/kl`, ...),
- `checkpoints/iter_NNNNNN/eval/<split>/results.json` (and `initial/eval/<split>/results.json`
  for the starting model, iteration 0, if evaluated with `vineppo eval --include-initial`).

Per run, the first table gives the algorithm, the checkpoint chosen **on validation** (highest
validation pass@1, ties to the earlier iteration) and its test pass@1, the last checkpoint's test
pass@1, and the iterations and wall-clock needed to reach the PPO run's peak test pass@1 (the
paper's efficiency measure, spec §5), and the tokens it generated. The second table ("reaching
each other run's peak") compares any number of runs of any algorithms at equal compute: for
every pair, the iteration, wall-clock and generated tokens (episodes + MC rollouts) a run needed
to first reach the other run's peak test pass@1. A run without validation results gets no selected
checkpoint: the table says "no validation results" (the selection never falls back to test).

Wall-clock is the cumulative `seconds` of metrics.jsonl up to an iteration (generation, MC,
training and weight sync; checkpoint writing and evaluation are not counted).

Generated tokens are metrics.jsonl's cumulative `compute/generated_tokens` (older runs: the sum of
`generate/tokens` and `mc/tokens`).

Plots (`--output-dir`): test pass@1 vs iteration, vs wall-clock and vs generated tokens, train reward vs
iteration, and test pass@1 vs KL to the reference (`train/kl` averaged over the last
`KL_WINDOW` iterations up to each checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from vineppo import checkpoint as ckpt
from vineppo.evaluate import INITIAL_DIR, checkpoint_iteration, eval_dir, read_results, read_run_config
from vineppo.evaluate.grid import GridError, check_grid, declared_grid, default_grid, on_grid, save_interval

log = logging.getLogger(__name__)

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
TABLE_FILE = "compare.md"
JSON_FILE = "compare.json"
NO_VALIDATION = "no validation results"


class CompareError(ValueError):
    """A run directory or one of its files cannot be used."""


@dataclass
class Run:
    """Everything `compare` reads from one run directory."""
    path: Path
    label: str
    algorithm: str
    task: str | None
    #: one row per iteration (the last row wins if an iteration appears twice), sorted
    metrics: list[dict]
    #: split -> iteration -> results.json contents
    evals: dict[str, dict[int, dict]] = field(default_factory=dict)
    #: how often it saved a checkpoint, and its own evaluation grid (config.yaml `eval_every`)
    save_every: int | None = None
    eval_every: int | None = None
    #: its last checkpoint's iteration (always on the grid)
    last_checkpoint: int | None = None

    def curve(self, split: str) -> list[tuple[int, float]]:
        """(iteration, pass@1) of every evaluated checkpoint on `split`, by iteration."""
        return sorted((it, float(r["pass@1"])) for it, r in self.evals.get(split, {}).items())

    @property
    def iterations(self) -> int:
        return int(self.metrics[-1]["iteration"]) if self.metrics else 0

    def cumulative_seconds(self) -> dict[int, float]:
        """iteration -> wall-clock seconds of training up to and including it (0 -> 0)."""
        out, total = {0: 0.0}, 0.0
        for row in self.metrics:
            total += float(row.get("seconds", 0.0))
            out[int(row["iteration"])] = total
        return out

    def cumulative_generated_tokens(self) -> dict[int, float]:
        """iteration -> tokens generated up to and including it (episodes + MC rollouts; 0 -> 0);
        {} when metrics.jsonl counts no tokens."""
        out, total = {0: 0.0}, 0.0
        for row in self.metrics:
            if "compute/generated_tokens" in row:
                total = float(row["compute/generated_tokens"])
            elif "generate/tokens" in row or "mc/tokens" in row:
                total += float(row.get("generate/tokens", 0.0)) + float(row.get("mc/tokens", 0.0))
            else:
                return {}
            out[int(row["iteration"])] = total
        return out


# ----------------------------------------------------------------------------- loading


def read_metrics(path: Path) -> list[dict]:
    """Rows of metrics.jsonl, one per iteration (a later duplicate replaces an earlier one; a
    half-written last line is ignored with a warning; other bad lines raise naming the line)."""
    if not path.is_file():
        return []
    by_iter: dict[int, dict] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):
                log.warning("%s, line %d: ignoring a half-written last line", path, number)
                continue
            raise CompareError(f"{path}, line {number}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("iteration"), int):
            raise CompareError(f"{path}, line {number}: expected an object with an integer 'iteration'")
        by_iter[row["iteration"]] = row
    rows = [by_iter[k] for k in sorted(by_iter)]
    missing = sorted(set(range(1, rows[-1]["iteration"] + 1)) - set(by_iter)) if rows else []
    if missing:
        log.warning("%s: iterations %s have no metrics row; wall-clock undercounts them", path, missing[:10])
    return rows


def _eval_roots(run_dir: Path) -> list[tuple[int, Path]]:
    """(iteration, directory holding eval/) for the initial model and every checkpoint."""
    roots = []
    if (run_dir / INITIAL_DIR / "eval").is_dir():
        roots.append((0, run_dir / INITIAL_DIR))
    for path in ckpt.list_checkpoints(run_dir):
        it = checkpoint_iteration(path)
        if it is None:
            log.warning("skipping %s: cannot tell its iteration", path)
            continue
        roots.append((it, path))
    return roots


def load_evals(run_dir: Path, splits: Sequence[str] = ("validation", "test")) -> dict[str, dict[int, dict]]:
    """split -> iteration -> results of every evaluated checkpoint (and the initial model)."""
    out: dict[str, dict[int, dict]] = {s: {} for s in splits}
    for it, root in _eval_roots(run_dir):
        for s in splits:
            res = read_results(eval_dir(root, s))
            if res is not None:
                out[s][it] = res
    for s, by_it in out.items():
        partial = sorted(it for it, r in by_it.items() if r.get("max_problems") is not None)
        if partial:
            log.warning("%s: %s results of iterations %s cover only part of the split (max_problems)",
                        run_dir, s, partial[:10])
    return out


def load_run(run_dir: str | Path, label: str | None = None) -> Run:
    """Read one run directory (config.yaml, metrics.jsonl, eval results)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CompareError(f"run directory {path} does not exist")
    cfg = read_run_config(path)
    if not cfg:
        log.warning("%s has no config.yaml: algorithm unknown", path)
    algorithm = str(cfg.get("algorithm", "unknown"))
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    metrics = read_metrics(path / "metrics.jsonl")
    if not metrics:
        log.warning("%s has no metrics.jsonl rows: no reward curve, no wall-clock", path)
    its = [it for it, _ in _eval_roots(path) if it > 0]
    run = Run(path, label or path.name, algorithm, data.get("task"), metrics, load_evals(path),
              save_every=save_interval(cfg, its), eval_every=declared_grid(cfg), last_checkpoint=max(its, default=None))
    if not any(run.evals.values()):
        log.warning("%s has no eval results; run `vineppo eval --run %s --split validation test`", path, path)
    return run


def apply_grid(runs: Sequence[Run], iteration_grid: int | None) -> int | None:
    """Keep each run's evaluations on one grid (`vineppo.evaluate.grid`): iterations divisible by
    `iteration_grid` plus the run's last checkpoint. Default: the coarsest interval among the runs
    (each run's `eval_every`, else its save interval), so no run gets more draws than another.
    Raises CompareError for a grid a run's checkpoints cannot fill. Returns the grid used."""
    grid = iteration_grid if iteration_grid is not None else default_grid(
        r.eval_every or r.save_every for r in runs)
    for r in runs:
        try:
            check_grid(grid, r.save_every, f"{r.label} ({r.algorithm})", "--iteration-grid")
        except GridError as e:
            raise CompareError(str(e)) from None
        r.evals = {s: {it: res for it, res in by.items() if on_grid(it, grid, r.last_checkpoint)}
                   for s, by in r.evals.items()}
    return grid


# ----------------------------------------------------------------------------- selection


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


# ----------------------------------------------------------------------------- table


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


TABLE_HEADER = ["run", "algorithm", "task", "iterations", "train hours", "selected (best val) iter",
                "val pass@1", "test pass@1 @ selected", "test pass@1 @ last", "PPO peak test",
                "iters to PPO peak", "hours to PPO peak", "iter speed-up", "wall-clock speed-up",
                "generated tokens (M)"]
REACH_HEADER = ["run", "reaching the peak of", "its peak test pass@1", "at iteration", "hours",
                "generated tokens (M)"]


def _mtok(x: float | None) -> str:
    return "—" if x is None else f"{x / 1e6:.3f}"


def reach_rows(reaches: Sequence[Reach]) -> list[list[str]]:
    return [[r.run, r.target, _pct(r.target_peak),
             "not reached" if r.iteration is None else str(r.iteration), _num(r.hours), _mtok(r.generated_tokens)]
            for r in reaches]


def table_rows(summaries: Sequence[RunSummary]) -> list[list[str]]:
    rows = []
    for s in summaries:
        selected = NO_VALIDATION if s.selected_iteration is None else str(s.selected_iteration)
        rows.append([
            s.label, s.algorithm, s.task or "?", str(s.iterations), _num(s.wallclock_hours), selected,
            _pct(s.selected_validation), _pct(s.selected_test),
            _pct(s.last_test) + (f" (iter {s.last_iteration})" if s.last_iteration is not None else ""),
            _pct(s.ppo_peak),
            "not reached" if s.ppo_peak is not None and s.iterations_to_ppo_peak is None
            else _num(s.iterations_to_ppo_peak, "{}"),
            _num(s.hours_to_ppo_peak), _num(s.iteration_speedup, "{:.2f}×"), _num(s.wallclock_speedup, "{:.2f}×"),
            _mtok(s.generated_tokens),
        ])
    return rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *(line(r) for r in rows)]) + "\n"


def console_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*header), sep, *(fmt.format(*r) for r in rows)]) + "\n"


# ----------------------------------------------------------------------------- plots


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


# ----------------------------------------------------------------------------- entry point


@dataclass
class CompareResult:
    summaries: list[RunSummary]
    table: str
    markdown_path: Path
    plots: dict[str, Path]


def compare(run_dirs: Sequence[str | Path], output_dir: str | Path, *, labels: Sequence[str] | None = None,
            print_table: bool = True, iteration_grid: int | None = None) -> CompareResult:
    """Load the runs, write `compare.md`, `compare.json` and the four PNGs into `output_dir`.
    iteration_grid: compare every run on the checkpoints of iterations divisible by it (plus each
    run's last); None: the coarsest interval among the runs (`apply_grid`)."""
    if not run_dirs:
        raise CompareError("no run directories given")
    if labels is not None and len(labels) != len(run_dirs):
        raise CompareError(f"{len(labels)} labels for {len(run_dirs)} runs")
    runs = [load_run(d, labels[i] if labels else None) for i, d in enumerate(run_dirs)]
    seen: set[str] = set()
    for r in runs:
        if r.label in seen:
            r.label = f"{r.label} ({r.path})"
        seen.add(r.label)
    grid = apply_grid(runs, iteration_grid)
    refs = reference_runs(runs)
    if not refs:
        log.warning("no PPO run among the runs: no 'iterations to reach the PPO peak'")
    summaries = [summarize_run(r, refs.get(r.task)) for r in runs]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = table_rows(summaries)
    reaches = reach_table(runs)
    md = ("# vineppo compare\n\n" + markdown_table(TABLE_HEADER, rows) + "\n"
          "pass@1 in %. The selected checkpoint is the best on **validation** (never chosen on test). "
          "Speed-ups: the PPO run's iterations (hours) to its peak test pass@1 divided by this run's. "
          "Hours: cumulative `seconds` of metrics.jsonl (no checkpointing or evaluation time). "
          "Generated tokens: episodes + MC rollouts. "
          + (f"Every run is judged on the checkpoints of iterations divisible by {grid} (and its last).\n\n"
             if grid is not None else "\n\n")
          + "## Reaching each other run's peak (equal compute)\n\n" + markdown_table(REACH_HEADER, reach_rows(reaches))
          + "\nFor each pair of runs of one task: the first evaluated checkpoint of `run` whose test pass@1 is at "
          "least the other run's peak, and the wall-clock and generated tokens spent up to it.\n")
    md_path = out / TABLE_FILE
    md_path.write_text(md, encoding="utf-8")
    # one object per run; "reach": what it needed to reach each other run's peak
    records = [{**s.__dict__, "reach": [r.__dict__ for r in reaches if r.run == s.label]} for s in summaries]
    (out / JSON_FILE).write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    selected = {s.label: s.selected_iteration for s in summaries}
    peaks = {task: p[1] for task, ref in refs.items() if (p := peak_test(ref)) is not None}
    plots = {
        "test_vs_iteration": plot_test_vs(runs, selected, out / PLOT_FILES["test_vs_iteration"], wallclock=False,
                                          ppo_peaks=peaks),
        "test_vs_wallclock": plot_test_vs(runs, selected, out / PLOT_FILES["test_vs_wallclock"], wallclock=True,
                                          ppo_peaks=peaks),
        "test_vs_generated_tokens": plot_test_vs(runs, selected, out / PLOT_FILES["test_vs_generated_tokens"],
                                                 wallclock=False, ppo_peaks=peaks, tokens=True),
        "reward_vs_iteration": plot_reward(runs, out / PLOT_FILES["reward_vs_iteration"]),
        "accuracy_vs_kl": plot_accuracy_vs_kl(runs, out / PLOT_FILES["accuracy_vs_kl"]),
    }
    if (value_plot := plot_value_error(runs, out / VALUE_ERROR_PLOT)) is not None:
        plots["value_error_vs_iteration"] = value_plot
    _pyplot().close("all")
    text = console_table(TABLE_HEADER, rows) + "\nreaching each other run's peak:\n" + console_table(
        REACH_HEADER, reach_rows(reaches))
    if print_table:
        print(text, end="")
        print(f"wrote {md_path} and {len(plots)} plots to {out}")
    return CompareResult(summaries, text, md_path, plots)
