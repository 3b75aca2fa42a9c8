"""Credit localisation against a task's exact oracle: does an estimator blame the step that failed?

A failed response of a task with an oracle (`first_wrong_step(row, response)`, e.g. the long-chain
task `vineppo.tasks.chain`) has one step that made it fail: the one holding its first wrong line.
An estimator's values V(s_0..s_{n-1}) at the response's step starts give each step the advantage
`A_k = r_k + V(s_{k+1}) − V(s_k)` (γ = 1, terminal V = 0: `vine_step_advantages`, the same formula
for both estimators):

- `mc`: VinePPO's Monte Carlo values (the advantages it trains with);
- `critic`: PPO's critic at the first token of each step (before this iteration's update).

The response is *localised* when its most negative step advantage is that step and no other step
ties with it (a tie is a miss, as ties are in the ranking score). `probe/<estimator>_localisation`
is localised / scored responses over every process (`localisation_rates`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from vineppo.advantages import vine_step_advantages
from vineppo.episodes import Episode
from vineppo.tasks.base import Row, Task
from vineppo.tokens import step_token_starts


def critic_step_values(e: Episode) -> list[float] | None:
    """PPO: the critic's V(s_0..s_{n-1}), read where the value probe reads it (the value at the
    action token that starts each step); None without critic values."""
    vals = e.meta.get("critic_values")
    if vals is None:
        return None
    return [float(vals[t]) if t < len(vals) else None
            for t in step_token_starts(e.step_boundaries, e.token_starts)]


def mc_step_values(e: Episode) -> list[float | None] | None:
    """VinePPO: its MC values V̂(s_0..s_{n-1}) (None beyond the MC cap)."""
    return e.step_values


#: estimator -> the values it gives an episode's step starts
STEP_VALUES: dict[str, Callable[[Episode], list[float | None] | None]] = {"mc": mc_step_values,
                                                                         "critic": critic_step_values}


def most_negative_step(advantages: Sequence[float]) -> int | None:
    """The index of the single most negative advantage; None when the minimum is shared (or empty)."""
    if not advantages:
        return None
    low = min(advantages)
    at = [i for i, a in enumerate(advantages) if a == low]
    return at[0] if len(at) == 1 else None


def is_localised(values: Sequence[float | None], reward: float, wrong_step: int) -> bool:
    """True when the step advantages from `values` (one per step) and the final `reward` put their
    single most negative value on `wrong_step` (`classify` says "hit"; a response whose advantages
    are all 0 blames no step, even a one-step one)."""
    return classify(values, reward, wrong_step) == "hit"


def localisation_counts(episodes: Sequence[Episode], task: Task, rows: Sequence[Row], estimator: str) -> tuple[int, int]:
    """(localised, scored) over this process's failed episodes (reward ≤ 0) whose first wrong step
    the task's oracle names and that have the estimator's values at every step up to the MC cap.
    (0, 0) when the task has no oracle."""
    oracle = getattr(task, "first_wrong_step", None)
    if oracle is None:
        return 0, 0
    values_of = STEP_VALUES[estimator]
    hits = scored = 0
    for e in episodes:
        if e.reward > 0 or e.num_steps < 1:
            continue
        values = values_of(e)
        if values is None or len(values) != e.num_steps or values[0] is None:
            continue
        wrong = oracle(rows[e.question_index], e.response_text)
        if wrong is None:
            continue
        scored += 1
        hits += is_localised(values, e.reward, wrong)
    return hits, scored


def localisation_metrics(episodes: Sequence[Episode], task: Task, rows: Sequence[Row], estimator: str) -> dict:
    """`probe/<estimator>_localised` and `probe/<estimator>_localisation_responses` (summed over
    processes before `localisation_rates`); {} when the task has no oracle."""
    if getattr(task, "first_wrong_step", None) is None:
        return {}
    hits, scored = localisation_counts(episodes, task, rows, estimator)
    return {f"probe/{estimator}_localised": hits, f"probe/{estimator}_localisation_responses": scored}


def localisation_rates(row: dict, estimators: Sequence[str] = ("mc", "critic")) -> dict:
    """`probe/<estimator>_localisation` = localised / scored responses (NaN: none scored)."""
    out = {}
    for name in estimators:
        n = row.get(f"probe/{name}_localisation_responses")
        if n is not None:
            out[f"probe/{name}_localisation"] = row[f"probe/{name}_localised"] / n if n else float("nan")
    return out


def classify(values: Sequence[float | None], reward: float, wrong_step: int) -> str:
    """Where the credit of one failed response lands: "hit" (the single most negative step advantage
    is the first wrong step), "before" / "after" it, "tie" (the minimum is shared by several steps),
    and "none" when no step advantage is negative (every value 0: nothing is blamed)."""
    rewards = [0.0] * len(values)
    rewards[-1] = float(reward)
    adv = vine_step_advantages(values, rewards)
    if min(adv) >= 0:
        return "none"
    at = most_negative_step(adv)
    if at is None:
        return "tie"
    return "hit" if at == wrong_step else ("before" if at < wrong_step else "after")


def dumped_breakdown(run_dir: str | Path, iterations: Sequence[int] | None = None) -> dict[str, int]:
    """`classify` counts over the failed responses of a run's episode dumps (`logging.dump_episodes`)
    at `iterations` (default: every dumped one), by the run's own estimator (VinePPO's MC values,
    PPO's critic); the task must have an oracle (`first_wrong_step`)."""
    import json

    from vineppo.config import load_config
    from vineppo.data import load_rows
    from vineppo.prompting import make_task

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    task = make_task(cfg.data)
    if getattr(task, "first_wrong_step", None) is None:
        raise ValueError(f"{run_dir}: task {cfg.data.task} has no oracle of wrong steps")
    rows = load_rows(cfg.data.task, "train", cfg.data.source, seed=cfg.data.validation_seed,
                     validation_size=cfg.data.validation_size, task=task)
    key = {"vineppo": "step_values", "ppo": "critic_step_values"}.get(cfg.algorithm)
    if key is None:
        raise ValueError(f"{run_dir}: {cfg.algorithm} has no value estimator of its own")
    out = {k: 0 for k in ("hit", "before", "after", "tie", "none")}
    for path in sorted((run_dir / "episodes").glob("iter_*.rank*.jsonl")):
        if iterations is not None and int(path.name[5:11]) not in iterations:
            continue
        for line in path.read_text().splitlines():
            e = json.loads(line)
            values = e.get(key)
            if e["reward"] > 0 or not values or values[0] is None:
                continue
            wrong = task.first_wrong_step(rows[e["question_index"]], e["response"])
            if wrong is not None:
                out[classify(values, e["reward"], wrong)] += 1
    return out

