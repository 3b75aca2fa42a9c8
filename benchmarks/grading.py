"""MATH grading throughput on MATH-500, with `MathTask.grade_many` and the sandboxed grader pool.

Two workloads over the 500 test rows:
- self: each gold solution graded against its own row (all correct; string fast path);
- mixed: a seeded mix, each row graded against its own solution (true) or another row's
  solution (almost always false, and often needing the symbolic check in a worker).

Usage: python benchmarks/grading.py [--data-dir ../shared/data/math] [--workers 2] [--timeout 15]
The last line ends with the headline number: cases per second on the mixed workload.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from vineppo.tasks.math import MathTask  # noqa: E402
from vineppo.tasks.math_grading import GraderPool  # noqa: E402

DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "math"


def load_rows(data_dir: Path) -> list[dict]:
    path = data_dir / "test.jsonl"
    if not path.is_file():
        sys.exit(f"MATH-500 not found at {path} (pass --data-dir)")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def mixed_responses(rows: list[dict], seed: int) -> tuple[list[str], int]:
    """Each row's own solution with probability 1/2, else a random other row's solution."""
    rng = random.Random(seed)
    responses, own = [], 0
    for index, row in enumerate(rows):
        if rng.random() < 0.5:
            responses.append(row["solution"])
            own += 1
        else:
            other = rng.randrange(len(rows) - 1)
            responses.append(rows[other + (other >= index)]["solution"])
    return responses, own


def timed_grading(task: MathTask, responses: list[str], rows: list[dict]) -> tuple[list[bool], float]:
    start = time.perf_counter()
    verdicts = task.grade_many(responses, rows)
    return verdicts, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="directory holding test.jsonl")
    parser.add_argument("--workers", type=int, default=2, help="grader worker processes")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per case for symbolic checks")
    parser.add_argument("--seed", type=int, default=0, help="seed of the true/false mix")
    args = parser.parse_args()

    rows = load_rows(args.data_dir)
    with GraderPool(num_workers=args.workers, timeout=args.timeout) as pool:
        task = MathTask(timeout=args.timeout, pool=pool)

        start = time.perf_counter()
        assert pool.math_equal("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}")
        print(f"pool start-up ({args.workers} workers, first symbolic case): {time.perf_counter() - start:.2f} s")

        verdicts, seconds = timed_grading(task, [r["solution"] for r in rows], rows)
        print(
            f"self:  {len(rows)} gold solutions vs their own rows: {sum(verdicts)} correct, "
            f"{seconds:.3f} s, {len(rows) / seconds:,.0f} cases/s"
        )

        responses, own = mixed_responses(rows, args.seed)
        before = dict(pool.stats)
        verdicts, seconds = timed_grading(task, responses, rows)
        sent = pool.stats["worker_cases"] - before["worker_cases"]
        timeouts = pool.stats["timeouts"] - before["timeouts"]
        crashes = pool.stats["crashes"] - before["crashes"]
        print(
            f"mixed: {len(rows)} cases (seed {args.seed}, {own} own solutions): {sum(verdicts)} correct, "
            f"{sent + timeouts + crashes} needed a worker ({timeouts} timeouts, {crashes} crashes), {seconds:.2f} s"
        )
        print(f"headline: mixed true/false MATH-500 grading, cases/s = {len(rows) / seconds:.1f}")


if __name__ == "__main__":
    main()
