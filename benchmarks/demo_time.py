"""Where a finished `vineppo demo` run's wall time went, and the least wall time any schedule of
its runs could take, as run and for cheaper variants (fewer iterations, fewer evaluation samples).

    python benchmarks/demo_time.py DIR [--lanes 2] [--variant ITERATIONS:SAMPLES ...]

DIR is a demo's output directory (its demo_details.json, runs/ and control/runs/). Per run it splits
the run process's seconds into RL iterations (metrics.jsonl `seconds`), evaluation (from the last
checkpoint's MANIFEST.json to the newest eval results.json: the process evaluates every checkpoint
after training) and the rest (process start, engines, checkpoint saves).

The floor of a schedule is the SFT start's seconds plus the larger of the longest run and the runs'
summed seconds over `--lanes` (the demo runs 2 at once on 2 cores, one thread each): no order of
the same runs on as many lanes ends sooner. A variant `I:S` keeps each run's rest, its first I
iterations' measured seconds (with a constant LR schedule an I-iteration run is the first I
iterations of the measured one) and the evaluation of the checkpoints at iterations <= I scaled by
S over the measured samples per problem. The SFT start's evaluation, which overlaps the runs, is
left out, so every floor is a lower bound. The last line is `demo_time: measured M min, floor F
min, <variant> floor V min, ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vineppo.checkpoint import MANIFEST, list_checkpoints  # noqa: E402
from vineppo.evaluate.results import eval_dir  # noqa: E402
from vineppo.evaluate.settings import RESULTS_FILE  # noqa: E402


@dataclass
class RunTime:
    #: "main" or "control"
    group: str
    name: str
    #: 0 .. seeds-1
    seed_index: int
    #: the run process's wall seconds (start to exit: training, evaluation, everything)
    process: float
    #: iteration -> its seconds (metrics.jsonl)
    iterations: dict[int, float]
    #: the iterations of its checkpoints (the process evaluates each after training)
    checkpoints: list[int]
    #: seconds from the last checkpoint's save to the newest evaluation result
    evaluation: float

    @property
    def rest(self) -> float:
        """Process start, engines, checkpoint saves: what is neither an iteration nor evaluation."""
        return self.process - sum(self.iterations.values()) - self.evaluation

    def projected(self, iterations: int, samples_ratio: float = 1.0) -> float:
        """Seconds of the same run stopped after `iterations`, its evaluation scaled by `samples_ratio`."""
        if iterations > max(self.iterations):
            raise ValueError(f"{self.name}: {iterations} iterations, but only {max(self.iterations)} were measured")
        kept = sum(1 for c in self.checkpoints if c <= iterations)
        evaluation = self.evaluation * kept / len(self.checkpoints) if self.checkpoints else 0.0
        return self.rest + sum(s for i, s in self.iterations.items() if i <= iterations) + evaluation * samples_ratio


def _run_time(group: str, name: str, summary: dict) -> RunTime:
    run_dir = Path(summary["run_dir"])
    metrics = run_dir / "metrics.jsonl"
    iterations = {}
    for line_no, line in enumerate(metrics.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                m = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{metrics}:{line_no}: not JSON ({e.msg})") from None
            iterations[int(m["iteration"])] = float(m.get("seconds", 0.0))
    if not iterations:
        raise ValueError(f"{metrics}: no iterations")
    checkpoints = list_checkpoints(run_dir)
    results = [os.path.getmtime(p) for c in checkpoints for p in c.glob(str(eval_dir(".", "*") / RESULTS_FILE))]
    if not checkpoints or not results:
        raise ValueError(f"{run_dir}: no evaluated checkpoint (checkpoints/iter_*/eval/*/{RESULTS_FILE})")
    evaluation = max(results) - os.path.getmtime(checkpoints[-1] / MANIFEST)
    return RunTime(group, name, int(summary.get("seed_index", 0)), float(summary["process_seconds"]), iterations,
                   [int(c.name.split("_")[-1]) for c in checkpoints], max(evaluation, 0.0))


def read_demo(demo_dir: Path) -> tuple[dict, list[RunTime]]:
    """(demo_details.json, every run's `RunTime`: the main runs, then the control's)."""
    path = Path(demo_dir) / "demo_details.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (DIR must be a finished `vineppo demo --output-dir DIR`)")
    details = json.loads(path.read_text(encoding="utf-8"))
    groups = [("main", details["runs"])] + ([("control", details["control"]["runs"])] if details.get("control") else [])
    return details, [_run_time(g, name, r) for g, runs in groups for name, r in runs.items()]


def floor_seconds(sft_seconds: float, run_seconds: list[float], lanes: int) -> float:
    """The least wall time of running `run_seconds` on `lanes` lanes after the SFT start."""
    if lanes < 1:
        raise ValueError(f"lanes must be >= 1, got {lanes}")
    return sft_seconds + max(max(run_seconds, default=0.0), sum(run_seconds) / lanes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("demo_dir", type=Path)
    ap.add_argument("--lanes", type=int, default=2, help="runs at once (the demo: 2 on 2 or more cores)")
    ap.add_argument("--variant", nargs="*", default=["10:8", "10:4", "5:4"],
                    help="ITERATIONS:SAMPLES per problem in evaluation")
    args = ap.parse_args(argv)
    details, runs = read_demo(args.demo_dir)
    sft = float(details["sft"]["seconds"]) if not details.get("sft_cached") else 0.0
    measured = float(details["summary"]["seconds"])
    samples = int(details["eval"]["n_samples"])
    print(f"{args.demo_dir}: {len(runs)} runs, {measured / 60:.1f} min in all, the SFT start "
          f"{'cached' if details.get('sft_cached') else f'{sft / 60:.1f} min'}")
    print(f"{'runs':<9}{'process':>9}{'iterations':>12}{'evaluation':>12}{'rest':>7}   (lane-minutes)")
    for group in ("main", "control"):
        rs = [r for r in runs if r.group == group]
        if rs:
            print(f"{group:<9}{sum(r.process for r in rs) / 60:>9.1f}{sum(sum(r.iterations.values()) for r in rs) / 60:>12.1f}"
                  f"{sum(r.evaluation for r in rs) / 60:>12.1f}{sum(r.rest for r in rs) / 60:>7.1f}")
    floor = floor_seconds(sft, [r.process for r in runs], args.lanes)
    parts = [f"measured {measured / 60:.1f} min", f"floor {floor / 60:.1f} min"]
    print(f"as run: floor {floor / 60:.1f} min on {args.lanes} lanes ({(floor - sft) / 60:.1f} without the SFT start)")
    seeds = sorted({r.seed_index for r in runs})
    if len(seeds) > 1:
        one = floor_seconds(sft, [r.process for r in runs if r.seed_index == seeds[0]], args.lanes)
        print(f"one seed (its first): floor {one / 60:.1f} min ({(one - sft) / 60:.1f} without the SFT start)")
        parts.append(f"one seed floor {one / 60:.1f} min")
    for v in args.variant:
        try:
            iters, n = (int(x) for x in v.split(":"))
        except ValueError:
            ap.error(f"--variant {v!r}: expected ITERATIONS:SAMPLES, e.g. 10:4")
        measured_iterations = min(max(r.iterations) for r in runs)
        if iters > measured_iterations:  # e.g. the default variants after a short run
            print(f"{iters} iterations, {n} evaluation samples: not projected (the runs measured {measured_iterations})")
            continue
        f = floor_seconds(sft, [r.projected(iters, n / samples) for r in runs], args.lanes)
        print(f"{iters} iterations, {n} evaluation samples: floor {f / 60:.1f} min ({(f - sft) / 60:.1f} without the SFT start)")
        parts.append(f"{v} floor {f / 60:.1f} min")
    print("demo_time: " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
