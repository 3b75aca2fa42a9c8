"""One probe of one training iteration, as the loop runs it:

1. `run_probe` (with the weights that sampled the iteration's episodes, before training): truth at a
   sample of the iteration's states (and the MC estimator's rollouts where the run has no MC values
   of its own), then the alternative next steps of some of them, sampled and valued;
2. PPO: `critic_sequences` → `Trainer.critic_state_values` → `set_critic_values`, with the critic
   that credits the iteration (every process together: a collective);
3. after training: `probe_iteration_metrics` (local counts and errors) and the records
   (`vineppo.probe.records`); after the metrics are reduced over processes, `ranking_accuracies`
   turns the summed counts into `probe/<estimator>_ranking_accuracy`.
"""

from __future__ import annotations

import random
from typing import Sequence

from vineppo.config import ProbeConfig
from vineppo.engine.base import Engine
from vineppo.episodes import Episode
from vineppo.mc import round_seed
from vineppo.probe.localisation import localisation_metrics, localisation_rates
from vineppo.probe.ranking import rank_alternatives, ranking_counts
from vineppo.probe.states import ProbeResult, critic_estimates, mc_estimates, probe_metrics, run_value_probe
from vineppo.tasks.base import Row, Task
from vineppo.tokens import decode_response

#: the value estimators the probe scores: the MC estimator (every run) and PPO's critic
ESTIMATORS = ("mc", "critic")
#: per-process counts the loop sums over processes (every other probe metric is averaged)
SUMMED_METRICS = frozenset({"probe/states", "probe/tokens", "probe/ranked_states", "probe/alternative_steps",
                            *(f"probe/{e}_{o}ranking_{c}" for e in ESTIMATORS for o in ("", "oracle_")
                              for c in ("correct", "pairs")),
                            *(f"probe/{e}_{c}" for e in ESTIMATORS for c in ("localised", "localisation_responses"))})


def estimators_of(algorithm: str) -> tuple[str, ...]:
    return ESTIMATORS if algorithm == "ppo" else ("mc",)


def run_probe(engine: Engine, task: Task, tokenizer, rows: Sequence[Row], episodes: Sequence[Episode],
              pcfg: ProbeConfig, *, algorithm: str, mc_k: int, cap: int | None, temperature: float, top_p: float,
              max_new_tokens: int, max_sequence_length: int, stop: Sequence[str], seed: int) -> ProbeResult:
    """The engine's part of the probe: states, truth, MC estimates, ranked alternatives. `mc_k`:
    the MC estimator's rollouts (`mc.k`); VinePPO's states keep the run's own MC values."""
    result = run_value_probe(engine, task, tokenizer, rows, episodes, n_states=pcfg.states, k=pcfg.k, cap=cap,
                             temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                             max_sequence_length=max_sequence_length, stop=stop, seed=seed,
                             mc_k=0 if algorithm == "vineppo" else mc_k)
    chosen = ranking_candidates(task, tokenizer, rows, result, random.Random(seed))
    chosen = sorted(chosen[: pcfg.ranking_states if pcfg.alternatives else 0])
    result.ranked, stats = rank_alternatives(
        engine, task, tokenizer, rows, [result.requests[i] for i in chosen], chosen,
        alternatives=pcfg.alternatives, min_alternatives=pcfg.min_alternatives, k=pcfg.k, mc_k=mc_k,
        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
        max_sequence_length=max_sequence_length, stop=stop, seeds=(round_seed(seed, 1), round_seed(seed, 2)))
    result.stats["probe/tokens"] += stats.pop("probe/ranking_tokens")
    result.stats["probe/seconds"] += stats.get("probe/ranking_seconds", 0.0)
    result.stats.update(stats)
    return result


def ranking_candidates(task: Task, tokenizer, rows: Sequence[Row], result: ProbeResult,
                       rng: random.Random) -> list[int]:
    """The probed states in the order their alternatives are ranked: shuffled, and where the task has
    an exact oracle, the states it does not already know are lost (`Task.oracle_value` None) first:
    from a lost state every next step has value 0, so its alternatives have no order to rank."""
    order = list(range(len(result.states)))
    rng.shuffle(order)
    lost = {i for i in order if task.oracle_value(rows[result.requests[i].question_index],
                                                   decode_response(tokenizer, result.requests[i].prefix_response_ids))
            is not None}
    return [i for i in order if i not in lost] + [i for i in order if i in lost]


def critic_sequences(result: ProbeResult) -> list[list[int]]:
    """Token ids of every state + alternative step, in `result.ranked` order (the critic's inputs)."""
    out = []
    for rs in result.ranked:
        req = result.requests[rs.state]
        out += [req.prompt_ids + req.prefix_response_ids + step for step in rs.steps]
    return out


def set_critic_values(result: ProbeResult, values: Sequence[float]) -> None:
    """Attach the critic's V(s + a) (`critic_sequences` order) to the ranked states."""
    values = list(values)
    if len(values) != sum(len(rs.steps) for rs in result.ranked):
        raise ValueError(f"{len(values)} critic values for {sum(len(rs.steps) for rs in result.ranked)} steps")
    for rs in result.ranked:
        rs.critic, values = values[: len(rs.steps)], values[len(rs.steps):]


def probe_iteration_metrics(result: ProbeResult, episodes: Sequence[Episode], algorithm: str,
                            task: Task | None = None, rows: Sequence[Row] = ()) -> dict:
    """This process's probe metrics: the stats, each estimator's error at the states
    (`probe_metrics`), its ranking counts (`probe/<est>_ranking_correct` and `_pairs`, summed
    over processes before `ranking_accuracies`), and, where `task` has an oracle of wrong steps,
    the run's own estimator's credit localisation counts over the iteration's failed episodes
    (`vineppo.probe.localisation`)."""
    out = dict(result.stats)
    out.update(probe_metrics(result, mc_estimates(result, episodes), "mc"))
    if algorithm == "ppo":
        out.update(probe_metrics(result, critic_estimates(result, episodes), "critic"))
    counts = ranking_counts(result.ranked)
    oracle = ranking_counts(result.ranked, oracle=True)
    has_oracle = getattr(task, "oracle_step_pairs", None) is not None
    for name in estimators_of(algorithm):
        correct, pairs = counts.get(name, (0, 0))
        out[f"probe/{name}_ranking_correct"] = correct
        out[f"probe/{name}_ranking_pairs"] = pairs
        if has_oracle:
            correct, pairs = oracle.get(name, (0, 0))
            out[f"probe/{name}_oracle_ranking_correct"] = correct
            out[f"probe/{name}_oracle_ranking_pairs"] = pairs
    own = {"vineppo": "mc", "ppo": "critic"}.get(algorithm)
    if task is not None and own is not None:
        out.update(localisation_metrics(episodes, task, rows, own))
    return out


def ranking_accuracies(row: dict) -> dict:
    """`probe/<est>_ranking_accuracy` = correct / scored pairs over every process (NaN: no pair),
    and `probe/<est>_localisation` = localised / scored failed responses (`localisation_rates`)."""
    out = localisation_rates(row, ESTIMATORS)
    for name in ESTIMATORS:
        for kind in ("", "oracle_"):
            pairs = row.get(f"probe/{name}_{kind}ranking_pairs")
            if pairs is not None:
                out[f"probe/{name}_{kind}ranking_accuracy"] = (row[f"probe/{name}_{kind}ranking_correct"] / pairs
                                                               if pairs else float("nan"))
    return out
