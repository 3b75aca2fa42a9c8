"""The probed states and their ground truth (`probe.*`).

Every `probe.every` iterations, a random sample of this iteration's MC states (token prefixes of
the sampled responses at step starts, as in `vineppo.mc`) gets `probe.k` fresh rollouts in one
engine call; their mean reward is the ground truth. Runs without MC values of their own (PPO, GRPO,
...) get the MC estimator's `mc.k` rollouts in the same call (`n = probe.k + mc.k`, the first
`probe.k` are the truth), so the estimators are compared on identical states. Logged: the mean
absolute error of each estimate (VinePPO's MC value, fixed or adaptive; the probe's K-rollout MC
value; PPO's critic value at the state's position), and how often the estimate ranks two sibling
states (two different next steps from the same state, both in the batch) in the same order as the
truth. The official protocol for that ranking, with freshly sampled alternative steps, is
`vineppo.probe.ranking`.

The sample is drawn first as sibling pairs (one pair per branching state, up to half of
`probe.states`), then filled with other states at random, so the ranking has pairs to score.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from vineppo.engine.base import Engine, SamplingParams
from vineppo.episodes import Episode
from vineppo.mc import MCRequest, mc_state_token_counts, rollout_rewards
from vineppo.tasks.base import Row, Task


@dataclass
class ProbeState:
    episode: int
    #: k of the state s_k (its prefix ends at the first token of step k)
    step: int
    #: response tokens in the prefix
    tokens: int


@dataclass
class ProbeResult:
    states: list[ProbeState]
    truth: list[float]
    #: index pairs into `states` that are siblings (same parent state, different next step)
    pairs: list[tuple[int, int]]
    stats: dict
    #: rollouts behind each truth
    k: int = 0
    #: the MC estimator's value of each state from `mc_k` rollouts of its own (runs without MC
    #: values of their own), else None
    mc: list[float] | None = None
    mc_k: int = 0
    #: the engine request of each state (prompt, response prefix, question)
    requests: list[MCRequest] = field(default_factory=list)
    #: the states whose alternative next steps were ranked (`vineppo.probe.ranking`)
    ranked: list = field(default_factory=list)


def select_probe_states(episodes: Sequence[Episode], n_states: int, rng: random.Random,
                        cap: int | None = None) -> tuple[list[ProbeState], list[tuple[int, int]]]:
    """Unique states of the batch (one representative episode each): sibling pairs first, then
    random others, `n_states` in all (fewer if the batch has fewer)."""
    unique: dict[tuple, ProbeState] = {}
    children: dict[tuple, list[tuple]] = {}
    for ei, e in enumerate(episodes):
        prev = None
        for k, t in enumerate(mc_state_token_counts(e, cap)):
            key = (e.question_index, tuple(e.prompt_ids), tuple(e.response_ids[:t]))
            if key not in unique:
                unique[key] = ProbeState(ei, k, t)
                if prev is not None:
                    children.setdefault(prev, []).append(key)
            prev = key
    chosen: list[tuple] = []
    pairs: list[tuple[int, int]] = []
    branching = [kids for kids in children.values() if len(kids) >= 2]
    rng.shuffle(branching)
    for kids in branching:
        if len(chosen) + 2 > n_states or 2 * (len(pairs) + 1) > max(2, n_states // 2):
            break
        a, b = rng.sample(kids, 2)
        pairs.append((len(chosen), len(chosen) + 1))
        chosen += [a, b]
    taken = set(chosen)
    rest = [key for key in unique if key not in taken]
    rng.shuffle(rest)
    chosen += rest[: max(0, n_states - len(chosen))]
    return [unique[key] for key in chosen], pairs


def run_value_probe(engine: Engine, task: Task, tokenizer, rows: Sequence[Row], episodes: Sequence[Episode], *,
                    n_states: int, k: int, cap: int | None, temperature: float, top_p: float, max_new_tokens: int,
                    max_sequence_length: int, stop: Sequence[str], seed: int, mc_k: int = 0) -> ProbeResult:
    """Ground truth for a random sample of this iteration's states: mean reward of `k` rollouts each,
    and with `mc_k` > 0 the MC estimator's value from `mc_k` more, all in one engine call. Run it
    with the weights that sampled the episodes."""
    t0 = time.perf_counter()
    states, pairs = select_probe_states(episodes, n_states, random.Random(seed), cap)
    if not states:
        return ProbeResult([], [], [], {"probe/states": 0, "probe/sibling_pairs": 0, "probe/tokens": 0,
                                         "probe/truth_mean": float("nan"), "probe/seconds": 0.0},
                           k=k, mc=[] if mc_k else None, mc_k=mc_k)
    requests = [MCRequest(list(episodes[s.episode].prompt_ids), list(episodes[s.episode].response_ids[: s.tokens]),
                          episodes[s.episode].question_index) for s in states]
    params = SamplingParams(n=k + mc_k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                            stop=tuple(stop), seed=seed)
    outs = engine.generate([r.prompt_ids + r.prefix_response_ids for r in requests], params, desc="probe: rollouts")
    rewards = rollout_rewards(task, tokenizer, rows, requests, outs, max_sequence_length)
    truth = [float(np.mean(r[:k])) for r in rewards]
    mc = [float(np.mean(r[k:])) for r in rewards] if mc_k else None
    tokens = sum(len(c.token_ids) for comps in outs for c in comps)
    stats = {"probe/states": len(states), "probe/sibling_pairs": len(pairs), "probe/tokens": tokens,
             "probe/truth_mean": float(np.mean(truth)), "probe/seconds": time.perf_counter() - t0}
    return ProbeResult(states, truth, pairs, stats, k=k, mc=mc, mc_k=mc_k, requests=requests)


def mc_estimates(result: ProbeResult, episodes: Sequence[Episode]) -> list[float | None]:
    """The MC estimator's value of each probed state: the probe's own `mc_k`-rollout value where it
    drew one, else (VinePPO) the run's MC value V̂(s_k)."""
    if result.mc is not None:
        return list(result.mc)
    out = []
    for s in result.states:
        vals = episodes[s.episode].step_values
        out.append(None if vals is None or s.step >= len(vals) else vals[s.step])
    return out


def critic_estimates(result: ProbeResult, episodes: Sequence[Episode]) -> list[float | None]:
    """PPO: the critic's V(s) at the state's position — the value at the action token that follows
    the prefix (`episode.meta["critic_values"]`, one per action token, set by the trainer)."""
    out = []
    for s in result.states:
        vals = episodes[s.episode].meta.get("critic_values")
        out.append(None if vals is None or s.tokens >= len(vals) else float(vals[s.tokens]))
    return out


def probe_metrics(result: ProbeResult, estimates: Sequence[float | None], name: str) -> dict:
    """`probe/{name}_abs_error`: mean |estimate − truth| over the probed states;
    `probe/{name}_sibling_accuracy`: over sibling pairs whose true values differ, the share the
    estimate orders correctly (a tie in the estimate counts one half)."""
    errs = [abs(e - t) for e, t in zip(estimates, result.truth) if e is not None]
    # keys always present (NaN when nothing to score): processes gather the same metric keys
    out = {f"probe/{name}_abs_error": float(np.mean(errs)) if errs else float("nan")}
    scores = []
    for a, b in result.pairs:
        ea, eb, ta, tb = estimates[a], estimates[b], result.truth[a], result.truth[b]
        if ea is None or eb is None or ta == tb:
            continue
        scores.append(0.5 if ea == eb else float((ea > eb) == (ta > tb)))
    out[f"probe/{name}_sibling_accuracy"] = float(np.mean(scores)) if scores else float("nan")
    out["probe/scored_pairs"] = len(scores)
    return out
