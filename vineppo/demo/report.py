"""What the demo shows: its console lines, the final table, the demo plot (DIR/demo.png)."""

from __future__ import annotations

import json
import logging
import os
import statistics
from pathlib import Path
from typing import Sequence

from vineppo.compare.seeds import mean_sd, paired_differences
from vineppo.demo.config import DemoEval, _fmt_seconds, _say


def _report(algo: str, r: dict) -> None:
    _say(f"{algo}: test pass@1 {100 * r['test']:.1f}% after {r['final_iteration']} iterations "
         f"(RL time {_fmt_seconds(r['iteration_seconds'])}; its process, with checkpoints and evaluation, "
         f"{_fmt_seconds(r['process_seconds'])})")


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


#: display name and colour of each method
NAMES = {"vineppo": "VinePPO", "ppo": "PPO", "grpo": "GRPO", "dr_grpo": "Dr. GRPO", "rloo": "RLOO"}
COLORS = {"vineppo": "C0", "ppo": "C1", "grpo": "C2", "dr_grpo": "C4", "rloo": "C5"}


def method_stats(runs: dict[str, dict]) -> dict[str, dict]:
    """Per method, over its seeds: final test pass@1 mean and sample sd (in %; sd None with one
    seed), the number of seeds, and the mean RL time (the iterations' seconds)."""
    by: dict[str, list[dict]] = {}
    for r in runs.values():
        by.setdefault(r["algorithm"], []).append(r)
    out = {}
    for algo, rs in by.items():
        vals = [100 * r["test"] for r in rs]
        mean, sd = mean_sd(vals)
        out[algo] = {"mean": mean, "sd": sd, "n": len(vals), "values": vals,
                     "rl_seconds": statistics.fmean(r["iteration_seconds"] for r in rs),
                     "iterations": rs[0]["final_iteration"]}
    return out


def paired_difference(runs: dict[str, dict], a: str, b: str) -> dict | None:
    """`a − b` final test pass@1 (in %) over the seeds both ran (the same RL seed gives both the
    same questions each iteration): mean, sample sd (None with one seed), n, per-seed values."""
    def by_seed(algorithm: str) -> dict[int, float]:
        return {r["seed_index"]: 100 * r["test"] for r in runs.values() if r["algorithm"] == algorithm}

    _, diffs = paired_differences(by_seed(a), by_seed(b))
    if not diffs:
        return None
    mean, sd = mean_sd(diffs)
    return {"mean": round(mean, 2), "sd": round(sd, 2) if sd is not None else None,
            "n": len(diffs), "values": [round(d, 2) for d in diffs]}


def method_summary(runs: dict[str, dict], seeds: int) -> dict:
    """summary.json's per-method keys: each method's mean final test pass@1 (in %; VinePPO and PPO
    are present, None, when not run), `sd` and `rl_seconds` per method, `vineppo_minus_ppo` and
    `vineppo_minus_grpo` (`paired_difference`, None when one of the two did not run) and `seeds`."""
    stats = method_stats(runs)
    return {**{a: None for a in ("vineppo", "ppo")},
            **{a: round(st["mean"], 2) for a, st in stats.items()},
            "sd": {a: (round(st["sd"], 2) if st["sd"] is not None else None) for a, st in stats.items()},
            "rl_seconds": {a: round(st["rl_seconds"], 1) for a, st in stats.items()},
            "vineppo_minus_ppo": paired_difference(runs, "vineppo", "ppo"),
            "vineppo_minus_grpo": paired_difference(runs, "vineppo", "grpo"), "seeds": seeds}


def plot_series(sft_test: float, runs: dict[str, dict], *, sft_continued: float | None = None) -> dict:
    """The data `plot_demo` draws, in %: per run its test pass@1 curve [(iteration, pass@1)]
    starting at (0, SFT start) and its train reward [(iteration, mean reward)], plus the SFT start
    and SFT-continued reference lines."""
    return {"sft": 100 * sft_test, "sft_continued": None if sft_continued is None else 100 * sft_continued,
            "runs": {name: {"algorithm": r["algorithm"],
                            "test": [(0, 100 * sft_test)] + sorted((int(it), 100 * v["test"]) for it, v in r["curve"].items()),
                            "reward": [(it, v) for it, v in r["reward"] if v is not None]}
                     for name, r in runs.items()}}


def plot_demo(path: Path, sft_test: float, runs: dict[str, dict], ev: DemoEval, n_test: int, *,
              sft_continued: float | None = None, task: str = "synthetic arithmetic") -> Path:
    """`task` names the problems in the title. Left: held-out test pass@1 (%) vs iteration per run (iteration 0 = the SFT start; one line
    per seed, one colour per method), the SFT start dashed and the SFT-continued control dotted.
    Right: train reward (mean over the iteration's episodes, T = sampling T) vs iteration, raw
    faint and moving average solid. The data drawn (`plot_series`) is written beside it as JSON
    (`demo.json` for `demo.png`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = plot_series(sft_test, runs, sft_continued=sft_continued)
    path.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    labelled: set[str] = set()
    stats = method_stats(runs)
    for series in data["runs"].values():
        algo = series["algorithm"]
        color, name = COLORS.get(algo, "C7"), NAMES.get(algo, algo)
        st = stats[algo]
        final = f"{st['mean']:.1f}%" + (f" ± {st['sd']:.1f}, {st['n']} seeds" if st["sd"] is not None else "")
        label = None if algo in labelled else f"{name} (final {final})"
        labelled.add(algo)
        a.plot(*zip(*series["test"]), "-o", color=color, markersize=3, label=label)
        if series["reward"]:
            its, vals = zip(*series["reward"])
            b.plot(its, vals, color=color, alpha=0.25, linewidth=0.8)
            b.plot(its, _moving_average(list(vals), 3), color=color, label=None if label is None else name)
    a.axhline(data["sft"], color="gray", linestyle="--", label=f"SFT start {data['sft']:.1f}%")
    if data["sft_continued"] is not None:
        a.axhline(data["sft_continued"], color="black", linestyle=":",
                  label=f"SFT continued {data['sft_continued']:.1f}%")
    a.set_title(f"Held-out test pass@1 ({n_test} problems x {ev.n_samples} samples, T={ev.temperature})", fontsize=9)
    a.set_xlabel("RL iteration")
    a.set_ylabel("pass@1 (%)")
    b.set_title("Train reward (moving average of 3 iterations)", fontsize=9)
    b.set_xlabel("RL iteration")
    b.set_ylabel("mean reward (train accuracy, sampling T)")
    return save_panels(fig, (a, b), path, f"vineppo demo: {task}, tiny Llama on CPU")


def save_panels(fig, axes, path: Path, title: str) -> Path:
    """The demo figures' finish: grid and legend on each panel, the title, saved at 110 dpi, closed."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def final_table(sft_test: float, stats: dict[str, dict], sft_note: str, *, sft_continued: float | None = None,
                sft_continued_steps: int | None = None, diff: dict | None = None) -> str:
    """The demo's table: SFT start, SFT continued, each method's final test pass@1 (mean ± sd over
    seeds), its gain over the SFT start, iterations and mean RL time; then VinePPO − PPO."""
    rows = [("SFT start", f"{100 * sft_test:.1f}%", "—", "—", sft_note)]
    if sft_continued is not None:
        rows.append(("SFT continued", f"{100 * sft_continued:.1f}%", f"{100 * (sft_continued - sft_test):+.1f}", "—",
                     f"(+{sft_continued_steps} SFT steps)"))
    for algo, st in sorted(stats.items(), key=lambda kv: list(NAMES).index(kv[0]) if kv[0] in NAMES else 99):
        p = f"{st['mean']:.1f}%" + (f" ± {st['sd']:.1f}" if st["sd"] is not None else "")
        rows.append((NAMES.get(algo, algo), p, f"{st['mean'] - 100 * sft_test:+.1f}", str(st["iterations"]),
                     _fmt_seconds(st["rl_seconds"])))
    lines = [f"{'model':<14} {'test pass@1':>14} {'vs SFT':>8} {'iterations':>10}  {'RL time':<12}"]
    for name, p, d, its, t in rows:
        lines.append(f"{name:<14} {p:>14} {d:>8} {its:>10}  {t:<12}")
    if diff is not None:
        spread = f" ± {diff['sd']:.1f} (sd over {diff['n']} paired seeds: {diff['values']})" if diff["sd"] is not None else ""
        lines.append(f"VinePPO − PPO: {diff['mean']:+.1f} points{spread}")
    return "\n".join(lines)


def _quiet_logs() -> None:
    """Keep the demo's console readable: the loop's one line per iteration and the demo's own
    lines; per-call engine, evaluation and checkpoint logs are kept at WARNING (they are in the
    run directories anyway). Explicit user settings (e.g. VLLM_LOGGING_LEVEL) win."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("accelerate", "vineppo.engine", "vineppo.evaluate", "vineppo.data", "vineppo.compare"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - older transformers
        pass


