"""Test accuracy against train accuracy, checkpoint by checkpoint: how much of what a run gains on
the problems it trains on carries over to held-out ones (the paper's "generalization" plot).

Train pass@1 is `vineppo eval --split train`: a fixed seeded subset of the rows training samples
from (`vineppo.data.train_subset`), graded like test. The slope of a run's least-squares line of
test on train pass@1 is the points of test gained per point of train.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vineppo.compare.plots import _finish, _pyplot
from vineppo.compare.runs import Run
from vineppo.compare.tables import console_table, markdown_table

TEST_VS_TRAIN_PLOT = "test_vs_train.png"


def train_test_points(run: Run) -> list[tuple[int, float, float]]:
    """(iteration, train pass@1, test pass@1) of every checkpoint evaluated on both, by iteration."""
    train, test = dict(run.curve("train")), dict(run.curve("test"))
    return [(it, train[it], test[it]) for it in sorted(train) if it in test]


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Slope of the least-squares line of y on x; None with fewer than 2 points or no spread in x."""
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx <= 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def plot_test_vs_train(runs: Sequence[Run], out: Path) -> Path | None:
    """Test pass@1 (%) vs train pass@1 (%), one line per run through its checkpoints in iteration
    order (the first marked with a square, the last with a star); y = x dotted. None when no run
    has a checkpoint evaluated on both splits."""
    series = [(i, run, pts) for i, run in enumerate(runs) if (pts := train_test_points(run))]
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for i, run, pts in series:
        xs, ys = [100 * p[1] for p in pts], [100 * p[2] for p in pts]
        ax.plot(xs, ys, "-o", color=f"C{i}", markersize=3, label=f"{run.label} ({run.algorithm})")
        ax.plot(xs[:1], ys[:1], "s", color=f"C{i}", markersize=7)
        ax.plot(xs[-1:], ys[-1:], "*", color=f"C{i}", markersize=10)
    values = [100 * v for _, _, pts in series for p in pts for v in p[1:]]
    ax.plot([min(values), max(values)], [min(values), max(values)], ":", color="gray", linewidth=1)
    return _finish(ax, fig, out, "Test vs train pass@1 per checkpoint (square: first, star: last)",
                   "train pass@1 (%, fixed subset of the train split)", "test pass@1 (%)")


@dataclass
class TrainTestRow:
    label: str
    algorithm: str
    checkpoints: int
    slope: float | None
    first: tuple[int, float, float] | None
    last: tuple[int, float, float] | None


def train_test_rows(runs: Sequence[Run]) -> list[TrainTestRow]:
    """Per run with train results: the checkpoints on both splits, the slope, the first and last."""
    out = []
    for run in runs:
        pts = train_test_points(run)
        if pts:
            out.append(TrainTestRow(run.label, run.algorithm, len(pts),
                                    least_squares_slope([(p[1], p[2]) for p in pts]), pts[0], pts[-1]))
    return out


TRAIN_TEST_HEADER = ["run", "algorithm", "checkpoints", "first: iter, train, test", "last: iter, train, test",
                     "test points per train point"]


def _point(p: tuple[int, float, float] | None) -> str:
    return "—" if p is None else f"{p[0]}: {100 * p[1]:.1f}, {100 * p[2]:.1f}"


def _cells(rows: Sequence[TrainTestRow]) -> list[list[str]]:
    return [[r.label, r.algorithm, str(r.checkpoints), _point(r.first), _point(r.last),
             "—" if r.slope is None else f"{r.slope:.2f}"] for r in rows]


def train_test_text(rows: Sequence[TrainTestRow]) -> str:
    """The console table ("" without train results)."""
    return "test vs train (pass@1 %):\n" + console_table(TRAIN_TEST_HEADER, _cells(rows)) if rows else ""


def train_test_markdown(rows: Sequence[TrainTestRow]) -> str:
    if not rows:
        return ""
    return ("## Test vs train\n\n" + markdown_table(TRAIN_TEST_HEADER, _cells(rows))
            + "\npass@1 in %; train: `vineppo eval --split train` (a fixed seeded subset of the train rows). "
              "Last column: slope of the least-squares line of test on train pass@1 over the checkpoints.\n\n")
