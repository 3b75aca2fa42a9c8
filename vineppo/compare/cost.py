"""Where an iteration's time goes: mean seconds and tokens per iteration of each phase, per run,
from metrics.jsonl.

Phases and the keys the loop and trainer log for them:
- generate: sampling the episodes (`generate/seconds`, `generate/tokens`: response tokens);
- mc: VinePPO's Monte Carlo rollouts (`mc/seconds`, `mc/tokens`: rollout tokens);
- logprobs: the old / reference log-probs (PPO: and the critic's values) over the action tokens
  (`logprobs/seconds`, `logprobs/tokens`);
- train: the PPO epochs' forward and backward passes (`train/seconds`, `train/tokens`: action
  tokens, once per epoch);
- sync: pushing the new weights into the rollout engine (`sync/seconds`);
- other: the iteration's `seconds` minus the phases above: grading, credit assignment, the value
  probe (`probe.every`), metrics.
Means are over the iterations with a `seconds` entry; an iteration without a phase's key counts
0 for it, and a phase no iteration logged is "—" (e.g. mc for PPO). Shares are the phase's mean
over the mean iteration time, so they add up to 100 % with "other". With several processes a
phase's seconds are the mean over processes and its tokens the sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from vineppo.compare.runs import Run
from vineppo.compare.tables import console_table, markdown_table

PHASES = ("generate", "mc", "logprobs", "train", "sync")
#: the metrics.jsonl key of each phase's seconds and tokens (None: the phase moves no tokens)
SECONDS_KEYS = {p: f"{p}/seconds" for p in PHASES}
TOKEN_KEYS = {"generate": "generate/tokens", "mc": "mc/tokens", "logprobs": "logprobs/tokens",
              "train": "train/tokens", "sync": None}


@dataclass
class PhaseCost:
    phase: str
    #: mean seconds per iteration (None: never logged)
    seconds: float | None
    #: seconds / the mean iteration's seconds
    share: float | None
    #: mean tokens per iteration (None: never logged, or the phase moves none)
    tokens: float | None


@dataclass
class RunCost:
    label: str
    algorithm: str
    #: iterations averaged over (those with `seconds`)
    iterations: int
    #: mean seconds of an iteration
    seconds: float
    phases: list[PhaseCost]
    #: the rest of the iteration (grading, credit assignment, probe, metrics)
    other_seconds: float
    other_share: float | None

    def to_json(self) -> dict:
        return {"iterations": self.iterations, "seconds_per_iteration": self.seconds,
                **{p.phase: {"seconds": p.seconds, "share": p.share, "tokens": p.tokens} for p in self.phases},
                "other": {"seconds": self.other_seconds, "share": self.other_share}}


def _mean_of(rows: Sequence[dict], key: str | None) -> float | None:
    """Mean of `key` over `rows`, a row without it counting 0; None if no row has it."""
    if key is None or not any(key in r for r in rows):
        return None
    return sum(float(r.get(key, 0.0)) for r in rows) / len(rows)


def phase_cost(run: Run) -> RunCost | None:
    """The run's mean cost per iteration by phase (None without any timed iteration)."""
    rows = [r for r in run.metrics if "seconds" in r]
    if not rows:
        return None
    total = _mean_of(rows, "seconds") or 0.0
    phases = []
    for p in PHASES:
        sec = _mean_of(rows, SECONDS_KEYS[p])
        phases.append(PhaseCost(p, sec, sec / total if sec is not None and total > 0 else None,
                                _mean_of(rows, TOKEN_KEYS[p])))
    other = total - sum(p.seconds or 0.0 for p in phases)
    return RunCost(run.label, run.algorithm, len(rows), total, phases, other, other / total if total > 0 else None)


COST_HEADER = ["run", "algorithm", "iterations", "s / iteration",
               *(f"{p} s (share)" for p in PHASES), "other s (share)"]
TOKEN_HEADER = ["run", "algorithm", *(f"{p} tokens" for p in PHASES if TOKEN_KEYS[p])]


def _cell(seconds: float | None, share: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.2f} ({100 * share:.0f} %)" if share is not None else f"{seconds:.2f}"


def _tokens(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x / 1e6:.3f} M" if x >= 1e6 else f"{x / 1e3:.1f} k"


def cost_rows(costs: Sequence[RunCost]) -> list[list[str]]:
    return [[c.label, c.algorithm, str(c.iterations), f"{c.seconds:.2f}",
             *(_cell(p.seconds, p.share) for p in c.phases), _cell(c.other_seconds, c.other_share)] for c in costs]


def token_rows(costs: Sequence[RunCost]) -> list[list[str]]:
    return [[c.label, c.algorithm, *(_tokens(p.tokens) for p in c.phases if TOKEN_KEYS[p.phase])] for c in costs]


@dataclass
class CostReport:
    costs: dict[str, RunCost]
    markdown: str
    text: str


def cost_report(runs: Sequence[Run]) -> CostReport | None:
    """The cost tables (Markdown section and console text) of the runs with timed iterations."""
    costs = [c for r in runs if (c := phase_cost(r)) is not None]
    if not costs:
        return None
    md = ("## Cost per iteration by phase\n\n" + markdown_table(COST_HEADER, cost_rows(costs))
          + "\nMean seconds per iteration of each phase (share of the iteration). other: grading, credit "
            "assignment, the value probe, metrics.\n\n" + markdown_table(TOKEN_HEADER, token_rows(costs))
          + "\nMean tokens per iteration: generated (episodes, MC rollouts) and processed (log-probs over the "
            "action tokens; train: action tokens once per PPO epoch).\n\n")
    text = ("cost per iteration by phase (seconds, share):\n" + console_table(COST_HEADER, cost_rows(costs))
            + "tokens per iteration by phase:\n" + console_table(TOKEN_HEADER, token_rows(costs)))
    return CostReport({c.label: c for c in costs}, md, text)
