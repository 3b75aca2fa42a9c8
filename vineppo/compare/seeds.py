"""Runs that differ only by their seed, as one group: mean ± sd over seeds, and paired differences
between groups on the seeds they share.

Two runs are one group when their config.yaml files are equal once `seed` and the keys that only
name or display a run (`GROUP_IGNORED_KEYS`) are left out: same algorithm, task, model, data and
every hyper-parameter. Standard deviations are sample standard deviations (n − 1 in the
denominator); with one seed there is none. A paired difference `A − B` is taken seed by seed over
the seeds both groups ran (the same seed gives both runs the same questions each iteration), so
the seed-to-seed spread shared by both methods cancels; seeds only one group ran are left out.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from vineppo.compare.plots import _finish, _pyplot
from vineppo.compare.runs import Run
from vineppo.compare.select import RunSummary
from vineppo.compare.tables import console_table, markdown_table

log = logging.getLogger(__name__)

#: config keys (dotted) that do not make two runs different experiments: the seed, and the run's
#: name and display settings
GROUP_IGNORED_KEYS = ("seed", "logging.run_name", "logging.progress", "logging.tensorboard", "logging.wandb",
                      "logging.wandb_project")
#: the order in which groups are subtracted (`A − B` with A first here)
ALGORITHM_ORDER = ("vineppo", "ppo", "grpo", "dr_grpo", "rloo")
#: per-run results the group tables summarise (RunSummary fields); pass@1 ones are shown in %
GROUP_METRICS = ("selected_test", "last_test", "peak_test", "wallclock_hours")
#: the metrics paired differences are taken on
PAIRED_METRICS = ("selected_test", "last_test")
SEED_PLOT = "test_pass1_vs_iteration_seeds.png"
SEED_JSON = "seed_groups.json"


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation with n − 1); sd None with one value, both None with none."""
    vals = [float(v) for v in values]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value} (lists and scalars are values)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def experiment_key(cfg: Mapping[str, Any]) -> str:
    """What makes runs one experiment: the config without GROUP_IGNORED_KEYS, as canonical JSON."""
    flat = {k: v for k, v in flatten(cfg).items() if k not in GROUP_IGNORED_KEYS}
    return json.dumps(flat, sort_keys=True, default=str)


def run_seed(run: Run) -> int | None:
    seed = run.config.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


@dataclass
class SeedGroup:
    """Runs of one experiment, one per seed (sorted by seed)."""
    label: str
    algorithm: str
    task: str | None
    runs: list[Run]
    #: the group's settings that differ from another group of its algorithm and task (e.g. mc.k)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int | None]:
        return [run_seed(r) for r in self.runs]


def _common_label(labels: Sequence[str]) -> str:
    """The labels' common prefix without a trailing seed marker: "vineppo-seed0", "vineppo-seed1"
    -> "vineppo"."""
    if len(labels) == 1:
        return labels[0]
    prefix = labels[0]
    for label in labels[1:]:
        while not label.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix.rstrip("0123456789").rstrip(" -_./=")
    if prefix.lower().endswith("seed"):
        prefix = prefix[:-4]
    return prefix.rstrip(" -_./=(")


def group_by_seed(runs: Sequence[Run]) -> list[SeedGroup]:
    """Runs with equal configs up to GROUP_IGNORED_KEYS, in order of first appearance, each sorted
    by seed. A run without config.yaml is a group of its own. Two runs with one config and one
    seed are kept (a warning names them): they are a repeat, not a second seed."""
    keyed: dict[str, list[Run]] = {}
    for i, run in enumerate(runs):
        key = experiment_key(run.config) if run.config else f"\x00no config {i}"
        keyed.setdefault(key, []).append(run)
    groups = []
    for members in keyed.values():
        members = sorted(members, key=lambda r: (run_seed(r) is None, run_seed(r) or 0))
        seeds = [run_seed(r) for r in members]
        for s in {s for s in seeds if seeds.count(s) > 1}:
            log.warning("runs %s have the same config and seed %s: repeats, not seeds",
                        [r.label for r in members if run_seed(r) == s], s)
        first = members[0]
        groups.append(SeedGroup(_common_label([r.label for r in members]) or first.algorithm, first.algorithm,
                                first.task, members))
    _name_settings(groups)
    return groups


def _name_settings(groups: Sequence[SeedGroup]) -> None:
    """Set each group's `settings` (what differs from the other groups of its algorithm and task)
    and make labels unique by appending them."""
    for g in groups:
        peers = [h for h in groups if h.algorithm == g.algorithm and h.task == g.task]
        if len(peers) < 2 or not g.runs[0].config:
            continue
        flats = [{k: v for k, v in flatten(h.runs[0].config).items() if k not in GROUP_IGNORED_KEYS} for h in peers]
        mine = flats[peers.index(g)]
        g.settings = {k: mine.get(k) for k in sorted(set().union(*flats)) if len({json.dumps(f.get(k), default=str)
                                                                               for f in flats}) > 1}
    labels = [g.label for g in groups]
    for g in groups:
        if labels.count(g.label) > 1:
            shown = ", ".join(f"{k}={v}" for k, v in list(g.settings.items())[:3])
            g.label = f"{g.label} [{shown or 'config differs'}]"


@dataclass
class PairedDifference:
    """`a − b` of one metric, seed by seed over the seeds both groups ran."""
    a: str
    b: str
    metric: str
    seeds: list[int]
    values: list[float]
    mean: float | None
    sd: float | None

    @property
    def n(self) -> int:
        return len(self.values)


def paired_differences(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[int], list[float]]:
    """(shared seeds in order, a[seed] − b[seed] for each): only seeds with a value in both."""
    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    return seeds, [a[s] - b[s] for s in seeds]


def _per_seed(group: SeedGroup, values: Mapping[str, float | None]) -> dict[int, float]:
    """seed -> the group's value (the mean over repeats of a seed), from {run label: value}."""
    by: dict[int, list[float]] = {}
    for r in group.runs:
        s, v = run_seed(r), values.get(r.label)
        if s is not None and v is not None:
            by.setdefault(s, []).append(float(v))
    return {s: statistics.fmean(v) for s, v in by.items()}


def _order(groups: Sequence[SeedGroup]) -> list[SeedGroup]:
    rank = {a: i for i, a in enumerate(ALGORITHM_ORDER)}
    return sorted(groups, key=lambda g: (rank.get(g.algorithm, len(rank)), groups.index(g)))


def group_pairs(groups: Sequence[SeedGroup], per_run: Mapping[str, Mapping[str, float | None]],
                metrics: Sequence[str] = PAIRED_METRICS) -> list[PairedDifference]:
    """Paired differences between every two groups of one task that share at least one seed, for
    each metric of `per_run` ({metric: {run label: value}}); `A − B` with A first in ALGORITHM_ORDER
    (then in the order given)."""
    ordered = _order(groups)
    out = []
    for i, ga in enumerate(ordered):
        for gb in ordered[i + 1:]:
            if ga.task != gb.task:
                continue
            for metric in metrics:
                seeds, diffs = paired_differences(_per_seed(ga, per_run[metric]), _per_seed(gb, per_run[metric]))
                if seeds:
                    out.append(PairedDifference(ga.label, gb.label, metric, seeds, diffs, *mean_sd(diffs)))
    return out


def group_curve(group: SeedGroup, split: str = "test") -> list[tuple[int, float, float | None, int]]:
    """(iteration, mean, sd, n) of pass@1 over the group's runs at every iteration all of them
    evaluated on `split` (a mean over fewer seeds at some points would bend the curve)."""
    curves = [dict(r.curve(split)) for r in group.runs]
    if not curves or not all(curves):
        return []
    common = sorted(set.intersection(*(set(c) for c in curves)))
    return [(it, *mean_sd([c[it] for c in curves]), len(curves)) for it in common]


# ------------------------------------------------------------------------------------------ output


def _pm(mean: float | None, sd: float | None, scale: float = 100.0, fmt: str = "{:.1f}") -> str:
    if mean is None:
        return "—"
    return fmt.format(scale * mean) + ("" if sd is None else " ± " + fmt.format(scale * sd))


GROUP_HEADER = ["group", "algorithm", "task", "seeds", "n", "test pass@1 @ selected", "test pass@1 @ last",
                "peak test pass@1", "train hours", "differs by"]
PAIR_HEADER = ["A − B", "metric", "shared seeds", "per-seed A − B (points)", "mean ± sd (points)"]
_METRIC_NAMES = {"selected_test": "test pass@1 @ selected", "last_test": "test pass@1 @ last"}


def group_rows(groups: Sequence[SeedGroup], per_run: Mapping[str, Mapping[str, float | None]]) -> list[list[str]]:
    rows = []
    for g in groups:
        cells = []
        for metric in GROUP_METRICS:
            vals = [per_run[metric].get(r.label) for r in g.runs]
            vals = [v for v in vals if v is not None]
            scale, fmt = (1.0, "{:.2f}") if metric == "wallclock_hours" else (100.0, "{:.1f}")
            cell = _pm(*mean_sd(vals), scale=scale, fmt=fmt)
            if vals and len(vals) < len(g.runs):
                cell += f" ({len(vals)} of {len(g.runs)})"
            cells.append(cell)
        settings = ", ".join(f"{k}={v}" for k, v in g.settings.items()) or "—"
        rows.append([g.label, g.algorithm, g.task or "?", ", ".join(str(s) for s in g.seeds), str(len(g.runs)),
                     *cells, settings])
    return rows


def pair_rows(pairs: Sequence[PairedDifference]) -> list[list[str]]:
    return [[f"{p.a} − {p.b}", _METRIC_NAMES.get(p.metric, p.metric), ", ".join(map(str, p.seeds)),
             ", ".join(f"{100 * v:+.1f}" for v in p.values),
             "—" if p.mean is None else f"{100 * p.mean:+.1f}" + ("" if p.sd is None else f" ± {100 * p.sd:.1f}")
             + f" (n={p.n})"]
            for p in pairs]


def seeds_json(groups: Sequence[SeedGroup], per_run: Mapping[str, Mapping[str, float | None]],
               pairs: Sequence[PairedDifference]) -> dict:
    """The groups (runs, seeds, mean / sd / n of each metric) and the paired differences."""
    def stats(g: SeedGroup, metric: str) -> dict:
        vals = [v for r in g.runs if (v := per_run[metric].get(r.label)) is not None]
        mean, sd = mean_sd(vals)
        return {"mean": mean, "sd": sd, "n": len(vals)}

    return {"groups": [{"label": g.label, "algorithm": g.algorithm, "task": g.task, "seeds": g.seeds,
                        "runs": [r.label for r in g.runs], "settings": g.settings,
                        **{m: stats(g, m) for m in GROUP_METRICS}} for g in groups],
            "paired_differences": [{"a": p.a, "b": p.b, "metric": p.metric, "seeds": p.seeds, "values": p.values,
                                    "mean": p.mean, "sd": p.sd, "n": p.n} for p in pairs]}


def plot_seed_bands(groups: Sequence[SeedGroup], out: Path) -> Path:
    """Test pass@1 (%) vs iteration per group: the mean over seeds, a band of ± one sd."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, g in enumerate(groups):
        pts = group_curve(g)
        if not pts:
            continue
        its = [p[0] for p in pts]
        mean = [100 * p[1] for p in pts]
        ax.plot(its, mean, "-o", color=f"C{i}", markersize=3, label=f"{g.label} ({g.algorithm}, {len(g.runs)} seeds)")
        if len(g.runs) > 1:
            sd = [100 * (p[2] or 0.0) for p in pts]
            ax.fill_between(its, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                            color=f"C{i}", alpha=0.2, linewidth=0)
    return _finish(ax, fig, out, "Test pass@1 vs iteration over seeds (mean ± sd)", "iteration", "pass@1 (%)")


@dataclass
class SeedReport:
    groups: list[SeedGroup]
    pairs: list[PairedDifference]
    markdown: str
    text: str
    plot: Path | None


def seed_report(runs: Sequence[Run], summaries: Sequence[RunSummary], out: Path) -> SeedReport | None:
    """Group the runs by seed; None when no group has two runs. Otherwise write SEED_PLOT and
    SEED_JSON into `out` and return the tables (Markdown section and console text)."""
    groups = group_by_seed(runs)
    if not any(len(g.runs) > 1 for g in groups):
        return None
    per_run = {m: {s.label: getattr(s, m) for s in summaries} for m in GROUP_METRICS}
    pairs = group_pairs(groups, per_run)
    (out / SEED_JSON).write_text(json.dumps(seeds_json(groups, per_run, pairs), indent=1) + "\n", encoding="utf-8")
    plot = plot_seed_bands(groups, out / SEED_PLOT)
    g_rows, p_rows = group_rows(groups, per_run), pair_rows(pairs)
    md = ("## Over seeds\n\n" + markdown_table(GROUP_HEADER, g_rows)
          + "\nRuns whose config.yaml differs only by `seed` (and the run's name) form a group: mean ± sample sd "
            "(n − 1) over its seeds, pass@1 in %.\n\n"
          + ("### Paired differences\n\n" + markdown_table(PAIR_HEADER, p_rows)
             + "\nSeed by seed over the seeds both groups ran (same seed: the same questions each iteration), "
               "in points of pass@1; mean ± sample sd of the differences.\n" if pairs else "")
          + "\n")
    text = "over seeds:\n" + console_table(GROUP_HEADER, g_rows) + (
        "paired differences:\n" + console_table(PAIR_HEADER, p_rows) if pairs else "")
    return SeedReport(groups, pairs, md, text, plot)
