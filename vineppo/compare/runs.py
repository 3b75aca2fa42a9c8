"""Reading run directories for `vineppo compare`: config.yaml, metrics.jsonl and eval results, and
the common evaluation grid every run is judged on."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from vineppo import checkpoint as ckpt
from vineppo.evaluate import INITIAL_DIR, checkpoint_iteration, eval_dir, read_results, read_run_config
from vineppo.evaluate.grid import GridError, check_grid, declared_grid, default_grid, on_grid, save_interval

log = logging.getLogger(__name__)


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
    #: config.yaml as written by `vineppo train` ({} when absent)
    config: dict = field(default_factory=dict)

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


def load_evals(run_dir: Path, splits: Sequence[str] = ("validation", "test", "train")) -> dict[str, dict[int, dict]]:
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
              save_every=save_interval(cfg, its), eval_every=declared_grid(cfg), last_checkpoint=max(its, default=None),
              config=cfg)
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
