"""The value probe's records in the run directory, one JSON object a line:

- `probe/states.rank<R>.jsonl`: one line per probed state — `iteration`, `rank`, `question_index`,
  `sample_index` (the episode that reached the state), `step` (k of s_k: the prefix ends at the
  first token of step k), `num_steps` (the steps of that episode's response), `prefix_tokens`,
  `estimator` (the run's own: "mc" for VinePPO, "critic" for PPO, null otherwise), `mc` (VinePPO:
  its MC value; other runs: the probe's `mc_rollouts`-rollout value), `mc_rollouts` (samples behind
  `mc`), `critic` (PPO: the critic's V before this iteration's update; else null), `truth` (mean
  reward of `truth_rollouts` rollouts) and `oracle` (`Task.oracle_value`, null where the task has
  none).
- `probe/alternatives.rank<R>.jsonl`: one line per state whose alternative next steps were ranked
  (`vineppo.probe.ranking`) — the state's keys as above, then per alternative step, in the same
  order, `steps` (its text), `truth`, `mc` and `critic` (null unless PPO); `oracle_pairs`: where
  the task has an exact oracle of steps, the pairs [i, j] with step i correct and step j wrong
  (null otherwise).

Every process appends its own file (each probes its own episodes); `read_records` merges them.
Resuming drops the records of iterations after the checkpoint (`truncate_records`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from vineppo.episodes import Episode
from vineppo.probe.states import ProbeResult, critic_estimates, mc_estimates
from vineppo.tasks.base import Row, Task
from vineppo.tokens import decode_response

log = logging.getLogger(__name__)

RECORDS_DIR = "probe"
KINDS = ("states", "alternatives")


class RecordsError(ValueError):
    """A probe records file cannot be read."""


def records_path(run_dir: str | Path, kind: str, rank: int) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown probe record kind {kind!r}; valid: {KINDS}")
    return Path(run_dir) / RECORDS_DIR / f"{kind}.rank{rank}.jsonl"


def own_estimator(algorithm: str) -> str | None:
    """The run's own value estimator: VinePPO's MC values, PPO's critic; None for the others."""
    return {"vineppo": "mc", "ppo": "critic"}.get(algorithm)


def _state_key(result: ProbeResult, episodes: Sequence[Episode], i: int, iteration: int, rank: int) -> dict:
    s = result.states[i]
    e = episodes[s.episode]
    return {"iteration": iteration, "rank": rank, "question_index": e.question_index,
            "sample_index": e.sample_index, "step": s.step, "num_steps": e.num_steps, "prefix_tokens": s.tokens}


def state_records(result: ProbeResult, episodes: Sequence[Episode], task: Task, rows: Sequence[Row], tokenizer, *,
                  iteration: int, rank: int, algorithm: str) -> list[dict]:
    """One record per probed state (fields: the module docstring)."""
    mc = mc_estimates(result, episodes)
    critic = critic_estimates(result, episodes) if algorithm == "ppo" else [None] * len(result.states)
    out = []
    for i, s in enumerate(result.states):
        e = episodes[s.episode]
        if result.mc is not None:
            mc_rollouts = result.mc_k
        else:  # the run's own MC value: every sample behind it (free episode outcomes included)
            samples = e.meta.get("mc_samples")
            mc_rollouts = samples[s.step] if samples is not None and s.step < len(samples) else None
        prefix = decode_response(tokenizer, e.response_ids[: s.tokens])
        out.append({**_state_key(result, episodes, i, iteration, rank), "estimator": own_estimator(algorithm),
                    "mc": mc[i], "mc_rollouts": mc_rollouts, "critic": critic[i], "truth": result.truth[i],
                    "truth_rollouts": result.k, "oracle": task.oracle_value(rows[e.question_index], prefix)})
    return out


def alternative_records(result: ProbeResult, episodes: Sequence[Episode], *, iteration: int, rank: int,
                        mc_rollouts: int) -> list[dict]:
    """One record per ranked state (fields: the module docstring)."""
    return [{**_state_key(result, episodes, rs.state, iteration, rank), "steps": list(rs.texts),
             "truth": list(rs.truth), "mc": list(rs.mc), "critic": None if rs.critic is None else list(rs.critic),
             "oracle_pairs": None if rs.oracle_pairs is None else [list(p) for p in rs.oracle_pairs],
             "truth_rollouts": result.k, "mc_rollouts": mc_rollouts}
            for rs in result.ranked]


def append_records(run_dir: str | Path, kind: str, rank: int, records: Sequence[dict]) -> None:
    """Append to this process's file (flushed at once: a crash loses at most the line being written)."""
    path = records_path(run_dir, kind, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))


def write_probe_records(run_dir: str | Path, result: ProbeResult, episodes: Sequence[Episode], task: Task,
                        rows: Sequence[Row], tokenizer, *, iteration: int, rank: int, algorithm: str,
                        mc_rollouts: int) -> None:
    """Both files of one probe on this process; `mc_rollouts`: the MC estimator's rollouts per
    alternative step."""
    append_records(run_dir, "states", rank, state_records(result, episodes, task, rows, tokenizer,
                                                          iteration=iteration, rank=rank, algorithm=algorithm))
    append_records(run_dir, "alternatives", rank, alternative_records(result, episodes, iteration=iteration,
                                                                      rank=rank, mc_rollouts=mc_rollouts))


def _rank_files(run_dir: Path, kind: str) -> list[Path]:
    return sorted((run_dir / RECORDS_DIR).glob(f"{kind}.rank*.jsonl"))


def _read_lines(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines):  # the line a crash cut short
                log.warning("%s, line %d: ignoring a half-written last line", path, number)
                continue
            raise RecordsError(f"{path}, line {number}: invalid JSON ({e.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("iteration"), int):
            raise RecordsError(f"{path}, line {number}: expected an object with an integer 'iteration'")
        out.append(rec)
    return out


def read_records(run_dir: str | Path, kind: str = "states") -> list[dict]:
    """Every process's records of `kind` ("states" | "alternatives") merged, sorted by iteration,
    question, sample, step and process; a state written twice (an iteration redone after a crash)
    keeps its last record. [] when the run has none."""
    if kind not in KINDS:
        raise ValueError(f"unknown probe record kind {kind!r}; valid: {KINDS}")
    merged: dict[tuple, dict] = {}
    for path in _rank_files(Path(run_dir), kind):
        for rec in _read_lines(path):
            key = (rec["iteration"], rec.get("question_index"), rec.get("sample_index"), rec.get("step"),
                   rec.get("rank"))
            merged[key] = rec
    return [merged[k] for k in sorted(merged, key=lambda k: tuple(-1 if x is None else x for x in k))]


def truncate_records(run_dir: str | Path, iteration: int) -> None:
    """Drop every process's records of iterations after `iteration` (resuming from its checkpoint
    redoes them; 0: a fresh start drops all). Run by one process before any writes."""
    for kind in KINDS:
        for path in _rank_files(Path(run_dir), kind):
            keep = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("iteration", 0) <= iteration:
                        keep.append(line)
                except (json.JSONDecodeError, AttributeError):
                    continue  # a half-written line from the crash
            path.write_text("".join(l + "\n" for l in keep), encoding="utf-8")
