"""The compare tables as text: console columns and Markdown."""

from __future__ import annotations

from typing import Sequence

from vineppo.compare.select import NO_VALIDATION, Reach, RunSummary


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
