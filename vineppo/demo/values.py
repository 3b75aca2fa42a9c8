"""The demo's value panel: how good each method's own value estimator is, from its runs' probes.

- `probe_summary` → summary.json `probe`: per estimator (VinePPO's MC values: `mc_*`, PPO's critic:
  `critic_*`), pooled over seeds and probed iterations, its ranking accuracy, its mean absolute
  error against the truth and its credit localisation (`vineppo.probe.localisation`), each with
  its sample size, plus the error by step index;
- `plot_values` → DIR/demo_values.png: those three against the step index / iteration.

Ranking accuracy is scored over the pairs whose order is exact where the task has an oracle of
steps (`probe/<est>_oracle_ranking_accuracy`: a correct next step against a wrong one, whose value
is exactly 0), else against the probe's rollouts as the official analyzer does
(`probe/<est>_ranking_accuracy`, ties wrong); both are kept.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from vineppo.compare.values import mae_by_step, mean_abs_error
from vineppo.demo.report import save_panels
from vineppo.probe import read_records

#: the algorithm whose own estimator each estimator is
OWN = {"mc": "vineppo", "critic": "ppo"}
NAMES = {"mc": "MC values (VinePPO)", "critic": "critic (PPO)"}
VALUES_PLOT_FILE = "demo_values.png"


def _metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.is_file() else []


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not math.isnan(x)


def probed_series(runs: dict[str, dict], estimator: str, metric: str) -> dict[int, list[float]]:
    """iteration → the values of `probe/<estimator>_<metric>` over the runs of the estimator's own
    algorithm (one per seed), NaN and missing left out."""
    out: dict[int, list[float]] = {}
    for r in runs.values():
        if r["algorithm"] != OWN[estimator]:
            continue
        for m in _metrics(r["run_dir"]):
            v = m.get(f"probe/{estimator}_{metric}")
            if _finite(v):
                out.setdefault(int(m["iteration"]), []).append(float(v))
    return dict(sorted(out.items()))


def error_by_step(runs: dict[str, dict], estimator: str) -> dict[int, float]:
    """step index k → mean |estimate − truth| over every probed state of the estimator's own runs."""
    records = [rec for r in runs.values() if r["algorithm"] == OWN[estimator]
               for rec in read_records(r["run_dir"], "states")]
    return {k: round(m, 4) for k, (m, _) in mae_by_step(records, estimator).items()}


def pooled(runs: dict[str, dict], estimator: str, correct: str, total: str) -> tuple[float | None, int]:
    """(Σ `probe/<estimator>_<correct>` / Σ `probe/<estimator>_<total>`, Σ total) over the probed
    iterations of every run of the estimator's own algorithm (every seed); None without a count."""
    c = n = 0
    for r in runs.values():
        if r["algorithm"] != OWN[estimator]:
            continue
        for m in _metrics(r["run_dir"]):
            if _finite(m.get(f"probe/{estimator}_{total}")) and _finite(m.get(f"probe/{estimator}_{correct}")):
                c += m[f"probe/{estimator}_{correct}"]
                n += m[f"probe/{estimator}_{total}"]
    return (round(c / n, 4) if n else None), int(n)


def blamed_localisation(runs: dict[str, dict], estimator: str, iterations: list[int]) -> dict:
    """From the episode dumps at the probed iterations (`vineppo.probe.localisation.dumped_breakdown`):
    `<est>_unblamed`, failed responses none of whose steps gets a negative advantage (every value 0:
    the estimator sees no chance of success anywhere, so nothing is blamed), and
    `<est>_localisation_blamed`, the localised share of the others. {} without dumps or oracle."""
    from vineppo.probe.localisation import dumped_breakdown

    total = {"hit": 0, "none": 0, "all": 0}
    for r in runs.values():
        if r["algorithm"] != OWN[estimator] or not any((Path(r["run_dir"]) / "episodes").glob("iter_*.jsonl")):
            continue
        try:
            c = dumped_breakdown(r["run_dir"], iterations)
        except (ValueError, FileNotFoundError):
            return {}
        total["hit"] += c["hit"]
        total["none"] += c["none"]
        total["all"] += sum(c.values())
    if not total["all"]:
        return {}
    blamed = total["all"] - total["none"]
    return {f"{estimator}_unblamed": total["none"],
            f"{estimator}_localisation_blamed": round(total["hit"] / blamed, 4) if blamed else None}


def probe_summary(runs: dict[str, dict]) -> dict | None:
    """summary.json `probe` (None when no run was probed), per estimator, pooled over every seed and
    probed iteration of its own method: `<est>_ranking_accuracy` (over the oracle's exact pairs where
    the task has them, else the rollouts' order: `ranking_against`) with `<est>_ranking_pairs`,
    `<est>_ranking_accuracy_rollouts` (the official analyzer's score against the probe's rollouts),
    `<est>_abs_error` (mean over every probed state) with `<est>_states`, `<est>_localisation` with
    `<est>_localisation_responses` (fractions; None where the method did not run or nothing was
    scored), with episode dumps also `<est>_localisation_blamed` and `<est>_unblamed`
    (`blamed_localisation`), `<est>_error_by_step`, and `iterations` (the probed ones)."""
    out: dict = {}
    iterations: set[int] = set()
    oracle = any(pooled(runs, e, "oracle_ranking_correct", "oracle_ranking_pairs")[1] for e in OWN)
    kind = "oracle_" if oracle else ""
    for est in OWN:
        for series in (probed_series(runs, est, "abs_error"), probed_series(runs, est, f"{kind}ranking_accuracy")):
            iterations |= set(series)
        records = [rec for r in runs.values() if r["algorithm"] == OWN[est]
                   for rec in read_records(r["run_dir"], "states")]
        mae, n_states = mean_abs_error(records, est)
        out[f"{est}_ranking_accuracy"], out[f"{est}_ranking_pairs"] = pooled(runs, est, f"{kind}ranking_correct",
                                                                             f"{kind}ranking_pairs")
        out[f"{est}_ranking_accuracy_rollouts"] = pooled(runs, est, "ranking_correct", "ranking_pairs")[0]
        out[f"{est}_abs_error"] = None if mae is None else round(mae, 4)
        out[f"{est}_states"] = n_states
        out[f"{est}_localisation"], out[f"{est}_localisation_responses"] = pooled(
            runs, est, "localised", "localisation_responses")
        out.update(blamed_localisation(runs, est, sorted(iterations)))
        out[f"{est}_error_by_step"] = error_by_step(runs, est)
    if not iterations:
        return None
    out["ranking_against"] = "oracle" if oracle else "rollouts"
    out["iterations"] = sorted(iterations)
    return out


def plot_values(path: Path, runs: dict[str, dict]) -> Path | None:
    """Three panels, MC values against PPO's critic: mean |estimate − truth| by step index; ranking
    accuracy of alternative next steps per probed iteration (chance 50 %); credit localisation per
    probed iteration. Means over seeds, the seeds' range shaded. None when no run was probed."""
    summary = probe_summary(runs)
    if summary is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"mc": "C0", "critic": "C1"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    a, b, c = axes
    for est in OWN:
        by_step = summary[f"{est}_error_by_step"]
        if by_step:
            a.plot(list(by_step), list(by_step.values()), "-o", color=colors[est], markersize=3, label=NAMES[est])
        metric = "oracle_ranking_accuracy" if summary["ranking_against"] == "oracle" else "ranking_accuracy"
        for ax, series in ((b, probed_series(runs, est, metric)), (c, probed_series(runs, est, "localisation"))):
            if not series:
                continue
            its = list(series)
            ax.plot(its, [100 * statistics.fmean(v) for v in series.values()], "-o", color=colors[est],
                    markersize=3, label=NAMES[est])
            ax.fill_between(its, [100 * min(v) for v in series.values()], [100 * max(v) for v in series.values()],
                            color=colors[est], alpha=0.15)
    b.axhline(50, color="gray", linestyle=":", linewidth=1, label="chance (50 %)")
    a.set_title("Value error along the chain", fontsize=9)
    a.set_xlabel("step index k of the state s_k")
    a.set_ylabel("mean |V estimate − V true|")
    against = "the oracle: a correct step vs a wrong one" if summary["ranking_against"] == "oracle" else \
        "the probe's rollouts, ties wrong"
    b.set_title(f"Ranking alternative next steps ({against})", fontsize=9)
    b.set_xlabel("iteration")
    b.set_ylabel("pairs ordered right (%)")
    b.set_ylim(0, 102)
    c.set_title("Failed responses whose most negative step advantage\nis the oracle's first wrong step", fontsize=9)
    c.set_xlabel("iteration")
    c.set_ylabel("localised (%)")
    c.set_ylim(0, 102)
    return save_panels(fig, axes, path, "Value estimates against the truth (value probe; mean over seeds, their range shaded)")


def probe_line(p: dict) -> str:
    """One console line of `probe_summary`."""
    def f(x, pct=True):
        return "—" if x is None else (f"{100 * x:.0f}%" if pct else f"{x:.3f}")

    return (f"value probe (iterations {p['iterations']}; ranking against the {p['ranking_against']}): "
            f"ranking accuracy MC {f(p['mc_ranking_accuracy'])} of {p['mc_ranking_pairs']} pairs / critic "
            f"{f(p['critic_ranking_accuracy'])} of {p['critic_ranking_pairs']}, mean |error| MC "
            f"{f(p['mc_abs_error'], False)} / critic {f(p['critic_abs_error'], False)}, localisation MC "
            f"{f(p['mc_localisation'])} of {p['mc_localisation_responses']} failed responses"
            + (f" ({f(p['mc_localisation_blamed'])} of those blamed on a step)" if p.get("mc_localisation_blamed") is not None else "")
            + f" / critic {f(p['critic_localisation'])} of {p['critic_localisation_responses']}")
