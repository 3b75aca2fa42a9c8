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

Further sections, each when its inputs exist: test vs train pass@1 per checkpoint
(`generalization`: `test_vs_train.png`, from `vineppo eval --split train`); runs that differ only
by their seed as groups, mean ± sd and paired differences (`seeds`: `seed_groups.json`,
`test_pass1_vs_iteration_seeds.png`); mean seconds and tokens per iteration by phase (`cost`).
Runs trained with the value probe (`probe.every`) or `logging.dump_episodes` also get the value
analyses (`values`): estimate vs truth, value error by step, ranking accuracy of alternative steps,
step advantages, and a section of compare.md.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vineppo.compare.cost import cost_report
from vineppo.compare.generalization import (TEST_VS_TRAIN_PLOT, plot_test_vs_train, train_test_markdown,
                                            train_test_rows, train_test_text)
from vineppo.compare.plots import (KL_WINDOW, PLOT_FILES, REWARD_SMOOTHING, VALUE_ERROR_PLOT, _pyplot,
                                   plot_accuracy_vs_kl, plot_reward, plot_test_vs, plot_value_error)
from vineppo.compare.runs import CompareError, Run, apply_grid, load_evals, load_run, read_metrics
from vineppo.compare.seeds import seed_report
from vineppo.compare.select import (NO_VALIDATION, Reach, RunSummary, best_on_validation, first_reaching, peak_test,
                                    reach_table, reference_runs, summarize_run)
from vineppo.compare.tables import (REACH_HEADER, TABLE_HEADER, console_table, markdown_table, reach_rows,
                                    table_rows)
from vineppo.compare.values import VALUE_PLOT_FILES, value_analyses

log = logging.getLogger(__name__)

TABLE_FILE = "compare.md"
JSON_FILE = "compare.json"

__all__ = [
    "KL_WINDOW", "PLOT_FILES", "REWARD_SMOOTHING", "VALUE_ERROR_PLOT", "CompareError", "Run", "apply_grid",
    "load_evals", "load_run", "read_metrics", "NO_VALIDATION", "Reach", "RunSummary", "best_on_validation",
    "first_reaching", "peak_test", "reach_table", "reference_runs", "summarize_run", "REACH_HEADER",
    "TABLE_HEADER", "console_table", "markdown_table", "reach_rows", "table_rows", "TABLE_FILE", "JSON_FILE",
    "VALUE_PLOT_FILES", "value_analyses",
    "CompareResult", "compare",
]


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
    seeds, cost, train_test = seed_report(runs, summaries, out), cost_report(runs), train_test_rows(runs)
    md += ("\n" + train_test_markdown(train_test) + (seeds.markdown if seeds else "")
           + (cost.markdown if cost else ""))
    values = value_analyses(runs, out)  # probed runs / episode dumps: plots and a compare.md section
    md += values.markdown
    md_path = out / TABLE_FILE
    md_path.write_text(md, encoding="utf-8")
    # one object per run; "reach": what it needed to reach each other run's peak; "cost": per phase;
    # "seed_group": the label of its group of seeds (seed_groups.json)
    group_of = {r.label: g.label for g in (seeds.groups if seeds else []) for r in g.runs}
    records = [{**s.__dict__, "reach": [r.__dict__ for r in reaches if r.run == s.label],
                "cost": cost.costs[s.label].to_json() if cost and s.label in cost.costs else None,
                "seed_group": group_of.get(s.label)} for s in summaries]
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
    if (train_plot := plot_test_vs_train(runs, out / TEST_VS_TRAIN_PLOT)) is not None:
        plots["test_vs_train"] = train_plot
    if seeds is not None and seeds.plot is not None:
        plots["test_vs_iteration_seeds"] = seeds.plot
    plots.update(values.plots)
    _pyplot().close("all")
    text = console_table(TABLE_HEADER, rows) + "\nreaching each other run's peak:\n" + console_table(
        REACH_HEADER, reach_rows(reaches)) + train_test_text(train_test) + (seeds.text if seeds else "") + (
        cost.text if cost else "")
    if print_table:
        print(text, end="")
        print(f"wrote {md_path} and {len(plots)} plots to {out}")
    return CompareResult(summaries, text, md_path, plots)
