"""What the demo shows: its console lines, the final table, the demo plot (DIR/demo.png)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

from vineppo.demo.config import DemoEval, _fmt_seconds, _say


def _report(algo: str, r: dict) -> None:
    _say(f"{algo}: test pass@1 {100 * r['test']:.1f}% after {r['final_iteration']} iterations "
         f"(training {_fmt_seconds(r['train_seconds'])}, evaluation {_fmt_seconds(r['eval_seconds'])})")


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def plot_demo(path: Path, sft_test: float, runs: dict[str, dict], ev: DemoEval, n_test: int) -> Path:
    """Left: held-out test pass@1 (%) vs iteration per method (iteration 0 = the SFT start), the SFT
    level dashed. Right: train reward (mean over the iteration's episodes, T = sampling T) vs
    iteration, raw faint and moving average solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"vineppo": "C0", "ppo": "C1"}
    names = {"vineppo": "VinePPO", "ppo": "PPO"}
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for algo, r in runs.items():
        pts = [(0, 100 * sft_test)] + sorted((it, 100 * v["test"]) for it, v in r["curve"].items())
        a.plot(*zip(*pts), "-o", color=colors[algo], label=f"{names[algo]} (final {100 * r['test']:.1f}%)")
        rew = [(it, v) for it, v in r["reward"] if v is not None]
        if rew:
            its, vals = zip(*rew)
            b.plot(its, vals, color=colors[algo], alpha=0.25, linewidth=0.8)
            b.plot(its, _moving_average(list(vals), 3), color=colors[algo], label=names[algo])
    a.axhline(100 * sft_test, color="gray", linestyle="--", label=f"SFT start {100 * sft_test:.1f}%")
    a.set_title(f"Held-out test pass@1 ({n_test} problems x {ev.n_samples} samples, T={ev.temperature})", fontsize=9)
    a.set_xlabel("RL iteration")
    a.set_ylabel("pass@1 (%)")
    b.set_title("Train reward (moving average of 3 iterations)", fontsize=9)
    b.set_xlabel("RL iteration")
    b.set_ylabel("mean reward (train accuracy, sampling T)")
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("vineppo demo: synthetic arithmetic, tiny Llama on CPU", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def final_table(sft_test: float, runs: dict[str, dict], sft_note: str) -> str:
    rows = [("SFT start", 100 * sft_test, None, "—", sft_note)]
    for algo, name in (("ppo", "PPO"), ("vineppo", "VinePPO")):
        if algo in runs:
            r = runs[algo]
            rows.append((name, 100 * r["test"], 100 * (r["test"] - sft_test), str(r["final_iteration"]),
                         _fmt_seconds(r["iteration_seconds"])))
    lines = [f"{'model':<10} {'test pass@1':>11} {'vs SFT':>8} {'iterations':>10}  {'RL time':<12}"]
    for name, p, d, its, t in rows:
        delta = "—" if d is None else f"{d:+.1f}"
        lines.append(f"{name:<10} {p:>10.1f}% {delta:>8} {its:>10}  {t:<12}")
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


