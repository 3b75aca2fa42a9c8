"""Test pass@1 by chain length: does the gap between methods open as the chains grow?

The long-chain demo's main runs (5-7 operations) and its short-chain control (1-2) start from one
SFT model, so their final test evaluations, split by each problem's number of operations, give
every method's accuracy as a function of chain length (1, 2, 5, 6, 7). If assigning credit to the
right step is what VinePPO adds, its paired lead over PPO and GRPO should grow with the length.

- `pass_by_ops` → one evaluation's {operations: (correct samples, samples)};
- `by_ops_summary` → summary.json `by_ops`: per method and length the mean over seeds, the paired
  `vineppo_minus_ppo` / `vineppo_minus_grpo` per length, the SFT start, the problems per length;
- `plot_by_ops` → DIR/demo_by_ops.png: both, against the number of operations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from vineppo.compare.seeds import mean_sd, paired_differences

BY_OPS_PLOT_FILE = "demo_by_ops.png"


def chain_ops(row: dict) -> int:
    """The number of operations (solution lines) of a chain problem (`vineppo.tasks.chain.chain_key`)."""
    from vineppo.tasks.chain import chain_key

    return len(chain_key(row)[1])


def pass_by_ops(samples_file: str | Path, rows: Sequence[dict]) -> dict[int, tuple[int, int]]:
    """{operations: (correct samples, samples)} of one evaluation's samples.jsonl, whose
    `problem_index` indexes `rows` (the evaluated split, in order)."""
    ops = [chain_ops(r) for r in rows]
    out: dict[int, list[int]] = {}
    path = Path(samples_file)
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: not a JSON record ({e})") from None
        i, correct = (rec.get("problem_index"), rec.get("correct")) if isinstance(rec, dict) else (None, None)
        if not isinstance(i, int) or not 0 <= i < len(rows) or not isinstance(correct, bool):
            raise ValueError(f"{path}:{line_no}: needs an integer problem_index in [0, {len(rows)}) and a "
                             f"boolean 'correct' (got problem_index={i!r}, correct={correct!r})")
        tally = out.setdefault(ops[i], [0, 0])
        tally[0] += correct
        tally[1] += 1
    return {k: (c, n) for k, (c, n) in sorted(out.items())}


def _final_samples(run: dict, split: str = "test") -> Path:
    from vineppo.checkpoint import checkpoint_name
    from vineppo.evaluate import SAMPLES_FILE, eval_dir

    return eval_dir(Path(run["run_dir"]) / "checkpoints" / checkpoint_name(run["final_iteration"]), split) / SAMPLES_FILE


def _initial_samples(run: dict, split: str = "test") -> Path:
    """The SFT start's evaluation, copied into every run (`vineppo.demo.evaluation._copy_initial`)."""
    from vineppo.evaluate import SAMPLES_FILE, eval_dir

    return eval_dir(Path(run["run_dir"]) / "initial", split) / SAMPLES_FILE


def _rounded(values: Sequence[float]) -> dict:
    """Mean, sample sd (None with one value) and the values, in % to 2 decimals (summary.json)."""
    mean, sd = mean_sd(values)
    return {"mean": round(mean, 2), "sd": None if sd is None else round(sd, 2), "values": [round(v, 2) for v in values]}


def _percent(tallies: dict[int, tuple[int, int]]) -> dict[int, float]:
    return {k: 100 * c / n for k, (c, n) in tallies.items()}


def by_ops_summary(groups: Sequence[tuple[dict[str, dict], Sequence[dict]]]) -> dict | None:
    """summary.json `by_ops` from (runs, test rows) groups (the main runs, the control): lengths as
    string keys, pass@1 in %. Per method and length: mean, sample sd, per-seed values (final
    checkpoints); `vineppo_minus_ppo` / `vineppo_minus_grpo`: the difference paired by seed (the
    same questions), per length; `sft`: the SFT start (every run's `initial` evaluation is the
    same one); `problems`: test problems per length; `segments`: each group's lengths (the plot
    does not join them). None when there are no runs."""
    per_seed: dict[str, dict[int, dict[int, float]]] = {}  # algorithm -> ops -> seed -> %
    sft: dict[int, float] = {}
    problems: dict[int, int] = {}
    segments: list[list[int]] = []
    for runs, rows in groups:
        if not runs:
            continue
        lengths = [chain_ops(r) for r in rows]
        shared = sorted(set(lengths) & set(problems))
        if shared:
            raise ValueError(f"pass@1 by chain length: operations {shared} occur in two groups of runs (the "
                             "main runs and the control must not share a length: demo.data vs demo.control)")
        segments.append(sorted(set(lengths)))
        for k in lengths:
            problems[k] = problems.get(k, 0) + 1
        first = next(iter(runs.values()))
        sft.update(_percent(pass_by_ops(_initial_samples(first), rows)))
        for r in runs.values():
            for k, v in _percent(pass_by_ops(_final_samples(r), rows)).items():
                per_seed.setdefault(r["algorithm"], {}).setdefault(k, {})[r["seed_index"]] = v
    if not per_seed:
        return None
    out: dict = {"ops": sorted(problems), "segments": segments, "problems": {str(k): n for k, n in sorted(problems.items())},
                 "sft": {str(k): round(v, 2) for k, v in sorted(sft.items())}, "methods": {}}
    for algo, by_len in per_seed.items():
        out["methods"][algo] = {}
        for k, seeds in sorted(by_len.items()):
            out["methods"][algo][str(k)] = _rounded([seeds[s] for s in sorted(seeds)])
    for other in ("ppo", "grpo"):
        key = f"vineppo_minus_{other}"
        out[key] = None
        if "vineppo" not in per_seed or other not in per_seed:
            continue
        out[key] = {}
        for k in sorted(per_seed["vineppo"]):
            _, diffs = paired_differences(per_seed["vineppo"][k], per_seed[other].get(k, {}))
            if diffs:
                out[key][str(k)] = {**_rounded(diffs), "n": len(diffs)}
    return out


def by_ops_line(s: dict) -> str:
    """Console lines of `by_ops_summary`: each method's pass@1 per length, then the paired gaps."""
    from vineppo.demo.report import NAMES

    head = "by chain length (operations): " + ", ".join(f"{k}: {s['problems'][str(k)]} problems" for k in s["ops"])
    rows = [f"  {'SFT start':<18}" + "".join(f"{s['sft'].get(str(k), float('nan')):>8.1f}" for k in s["ops"])]
    for algo, by_len in s["methods"].items():
        rows.append(f"  {NAMES.get(algo, algo):<18}" + "".join(
            f"{by_len[str(k)]['mean']:>8.1f}" if str(k) in by_len else f"{'—':>8}" for k in s["ops"]))
    for key, label in (("vineppo_minus_ppo", "VinePPO − PPO"), ("vineppo_minus_grpo", "VinePPO − GRPO")):
        if s.get(key):
            rows.append(f"  {label:<18}" + "".join(
                f"{s[key][str(k)]['mean']:>+8.1f}" if str(k) in s[key] else f"{'—':>8}" for k in s["ops"]))
    return "\n".join([head, f"  {'operations':<18}" + "".join(f"{k:>8}" for k in s["ops"]), *rows])


def plot_by_ops(path: Path, s: dict | None) -> Path | None:
    """Two panels against the number of operations: each method's test pass@1 (mean over seeds,
    the sample sd as bars; the SFT start dashed), and VinePPO's paired lead over PPO and GRPO.
    None without a summary."""
    if s is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vineppo.demo.report import COLORS, NAMES, save_panels

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    a, b = axes
    ops, segments = s["ops"], s.get("segments") or [s["ops"]]

    def draw(ax, series: dict, **style) -> None:
        """One line per segment (the control's lengths, the main runs'), one legend entry."""
        for n, seg in enumerate(segments):
            ks = [k for k in seg if str(k) in series]
            if not ks:
                continue
            ax.errorbar(ks, [series[str(k)]["mean"] for k in ks], yerr=[series[str(k)]["sd"] or 0 for k in ks],
                        markersize=3, capsize=3, **{**style, "label": style["label"] if n == 0 else None})

    draw(a, {k: {"mean": v, "sd": None} for k, v in s["sft"].items()}, fmt="--o", color="gray", label="SFT start")
    for algo, by_len in s["methods"].items():
        draw(a, by_len, fmt="-o", color=COLORS.get(algo), label=NAMES.get(algo, algo))
    for key, other in (("vineppo_minus_ppo", "ppo"), ("vineppo_minus_grpo", "grpo")):
        if s.get(key):
            draw(b, s[key], fmt="-o", color=COLORS.get(other), label=f"VinePPO − {NAMES[other]}")
    if not any(s.get(k) for k in ("vineppo_minus_ppo", "vineppo_minus_grpo")):
        b.text(0.5, 0.5, "no paired VinePPO runs", ha="center", va="center", transform=b.transAxes)
    b.axhline(0, color="gray", linestyle=":", linewidth=1)
    a.set_title("Test pass@1 by the problem's number of operations", fontsize=9)
    a.set_ylabel("test pass@1 (%)")
    b.set_title("VinePPO's lead, paired by seed", fontsize=9)
    b.set_ylabel("points of test pass@1")
    for ax in axes:
        ax.set_xlabel("operations (solution lines)")
        ax.set_xticks(ops)
    return save_panels(fig, axes, path, "Where the gap opens: final checkpoints by chain length (mean over seeds, sd as bars)")
