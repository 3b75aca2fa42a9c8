"""`python -m vineppo.probe RUN_DIR ...`: where the credit of failed responses lands against the task's
oracle (`vineppo.probe.localisation.dumped_breakdown`), from the runs' episode dumps."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from vineppo.probe.localisation import dumped_breakdown


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m vineppo.probe RUN_DIR [RUN_DIR ...] [--iterations 5 10 15]`."""
    import argparse

    ap = argparse.ArgumentParser(description="Where each failed response's most negative step advantage lands, "
                                             "against the task oracle's first wrong step (from the episode dumps)")
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--iterations", type=int, nargs="*", help="only these iterations (default: every dump)")
    args = ap.parse_args(argv)
    for run in args.runs:
        c = dumped_breakdown(run, args.iterations)
        n = sum(c.values())
        blamed = n - c["none"]
        print(f"{run}: {n} failed responses: " + ", ".join(f"{k} {v}" for k, v in c.items())
              + (f"; localised {c['hit'] / n:.1%} of all, {c['hit'] / blamed:.1%} of those blamed on some step"
                 if n and blamed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
