"""VinePPO's Monte Carlo values (spec §1.3): states are token prefixes of the sampled response cut
at the first token of each reasoning step, deduplicated across the batch; V̂(s) = mean reward of the
continuations sampled from s.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vineppo.engine.base import Engine, SamplingParams
from vineppo.episodes import Episode
from vineppo.tasks.base import Row, Task
from vineppo.tokens import decode_response, step_token_starts


@dataclass
class MCRequest:
    """One unique MC state: a token prefix (prompt + response tokens up to a step's first token)."""
    prompt_ids: list[int]
    #: the state's response tokens (the prefix after the prompt)
    prefix_response_ids: list[int]
    question_index: int


def mc_state_token_counts(episode: Episode, cap: int | None) -> list[int]:
    """For each state s_k that gets rollouts, how many response tokens precede it.

    States s_0 … s_{n-1} sit at the first token of each step (a token belongs to the step containing
    its first character). With a cap, only k ≤ cap get rollouts (spec §1.3 pseudo-code:
    `range(min(n - 1, cap) + 1)`); the rest are back-filled in `vine_step_advantages`.
    """
    starts = step_token_starts(episode.step_boundaries, episode.token_starts)
    last = episode.num_steps - 1 if cap is None else min(episode.num_steps - 1, cap)
    return starts[: last + 1]


def build_mc_requests(episodes: Sequence[Episode], cap: int | None) -> tuple[list[MCRequest], list[list[int]], int]:
    """Deduplicate identical token prefixes across the whole local batch.

    Returns (unique requests, per-episode list of request indices per state, naive state count).
    Requests come out in first-appearance order — each response's nested prefixes adjacent, s_0
    shared by a question's samples — which keeps the engine's prefix cache warm.
    """
    index: dict[tuple[int, ...], int] = {}
    requests: list[MCRequest] = []
    per_episode: list[list[int]] = []
    naive = 0
    for e in episodes:
        ids = []
        for t in mc_state_token_counts(e, cap):
            key = tuple(e.prompt_ids) + tuple(e.response_ids[:t])
            naive += 1
            if key not in index:
                index[key] = len(requests)
                requests.append(MCRequest(list(e.prompt_ids), list(e.response_ids[:t]), e.question_index))
            ids.append(index[key])
        per_episode.append(ids)
    return requests, per_episode, naive


def wilson_interval(mean: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a Bernoulli mean observed as `mean` over `n` samples
    (95 % for z = 1.96). Unlike the Wald interval p̂ ± z·sqrt(p̂(1−p̂)/n) it does not collapse to
    a point at p̂ = 0 or 1, which is exactly where adaptive MC must not stop too early:
        centre = (p̂ + z²/2n) / (1 + z²/n),   half-width = z / (1 + z²/n) · sqrt(p̂(1−p̂)/n + z²/4n²).
    n = 0 gives the whole [0, 1]."""
    if n <= 0:
        return 0.0, 1.0
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (mean + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(max(mean * (1.0 - mean), 0.0) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_halfwidth(mean: float, n: int, z: float = 1.96) -> float:
    lo, hi = wilson_interval(mean, n, z)
    return (hi - lo) / 2


@dataclass
class MCBudget:
    """How many rollouts each MC state gets (`mc.*` in the config).

    Fixed (the paper): K rollouts for every state, one engine call. Adaptive: rounds; every state
    starts with `k_min`, and after each round a state whose 95 % Wilson half-width is above
    `target_halfwidth` gets another `k_min`, up to `k_max` rollouts in total. All states of a round
    go to the engine in one call. The value is the mean over every sample the state received."""
    k: int = 9
    adaptive: bool = False
    k_min: int = 2
    k_max: int = 16
    target_halfwidth: float = 0.24
    #: count each sampled response as one more sample of every state it passes through: it is a
    #: continuation of each of its prefixes drawn from the same policy, so the mean stays unbiased
    #: (the step advantages then share that one sample with the episode's reward)
    include_episode_outcome: bool = False

    def round_sizes(self) -> list[int]:
        """Rollouts per round for a state that is never satisfied (sums to k, or to k_max)."""
        if not self.adaptive:
            return [self.k]
        sizes, total = [], 0
        while total < self.k_max:
            sizes.append(min(self.k_min, self.k_max - total))
            total += sizes[-1]
        return sizes


def round_seed(seed: int | None, round_index: int) -> int | None:
    """Round 0 keeps the phase seed (fixed K is unchanged); later rounds need other draws."""
    if seed is None or round_index == 0:
        return seed
    return (seed * 1_000_003 + 7919 * round_index) % (2**31)


def rollout_rewards(task: Task, tokenizer, rows: Sequence[Row], requests: Sequence[MCRequest], outs,
                    max_sequence_length: int) -> list[list[float]]:
    """The reward of every continuation of every request. A continuation's reward is the task
    reward of prefix steps + continuation; one stopped by length, or running past
    max_sequence_length, scores 0."""
    texts, owners, rows_for = [], [], []
    rewards = [[0.0] * len(comps) for comps in outs]
    for ri, (req, comps) in enumerate(zip(requests, outs)):
        for ci, c in enumerate(comps):
            fits = len(req.prompt_ids) + len(req.prefix_response_ids) + len(c.token_ids) + 1 <= max_sequence_length
            if c.finish_reason == "stop" and fits:
                texts.append(decode_response(tokenizer, req.prefix_response_ids + list(c.token_ids)))
                owners.append((ri, ci))
                rows_for.append(rows[req.question_index])
    for (ri, ci), rew in zip(owners, task.rewards_many(texts, rows_for)):
        rewards[ri][ci] = float(rew)
    return rewards


def score_rollouts(task: Task, tokenizer, rows: Sequence[Row], requests: Sequence[MCRequest], outs,
                   max_sequence_length: int) -> tuple[np.ndarray, int]:
    """Sum of rewards of each request's continuations, and the generated token count."""
    rewards = rollout_rewards(task, tokenizer, rows, requests, outs, max_sequence_length)
    tokens = sum(len(c.token_ids) for comps in outs for c in comps)
    return np.array([sum(r) for r in rewards], dtype=float), tokens


def estimate_mc_values(engine: Engine, task: Task, tokenizer, rows: Sequence[Row], episodes: Sequence[Episode], *,
                       k: int, cap: int | None, temperature: float, top_p: float, max_new_tokens: int,
                       max_sequence_length: int, stop: Sequence[str], seed: int | None,
                       budget: MCBudget | None = None) -> dict:
    """V̂(s) = mean reward of the continuations from each unique state; writes `episode.step_values`
    (and, per state, `episode.meta["mc_rollouts"]` / `["mc_interval"]`).

    Without `budget` (or with a fixed one) all unique states go to the engine in one call with
    n=K. An adaptive budget runs rounds, each one engine call for the states still too uncertain.
    A continuation's reward is the task reward of the full response text (prefix steps +
    continuation); a continuation stopped by length, or running past max_sequence_length, scores 0.
    """
    budget = budget or MCBudget(k=k)
    t0 = time.perf_counter()
    requests, per_episode, naive = build_mc_requests(episodes, cap)
    stats = {"mc/states": naive, "mc/unique_states": len(requests), "mc/rollouts": 0, "mc/engine_calls": 0}
    if not requests:
        for e in episodes:
            e.step_values = [None] * e.num_steps
        return stats
    sums = np.zeros(len(requests))
    samples = np.zeros(len(requests), dtype=np.int64)  # every sample, free ones included
    rollouts = np.zeros(len(requests), dtype=np.int64)  # engine rollouts only
    if budget.include_episode_outcome:
        for e, ids in zip(episodes, per_episode):
            for ri in ids:
                sums[ri] += e.reward
                samples[ri] += 1
    gen_tokens, t_gen, t_grade = 0, 0.0, 0.0
    active = list(range(len(requests)))
    for r, n in enumerate(budget.round_sizes()):
        if budget.adaptive and r > 0:
            active = [i for i in active
                      if wilson_halfwidth(sums[i] / samples[i], int(samples[i])) > budget.target_halfwidth]
        if not active:
            break
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                stop=tuple(stop), seed=round_seed(seed, r))
        t = time.perf_counter()
        outs = engine.generate([requests[i].prompt_ids + requests[i].prefix_response_ids for i in active], params,
                               desc=f"mc: rollouts (round {r + 1})" if budget.adaptive else "mc: rollouts")
        t_gen += time.perf_counter() - t
        stats["mc/engine_calls"] += 1
        t = time.perf_counter()
        round_sums, tokens = score_rollouts(task, tokenizer, rows, [requests[i] for i in active], outs,
                                            max_sequence_length)
        t_grade += time.perf_counter() - t
        gen_tokens += tokens
        for j, ri in enumerate(active):
            sums[ri] += round_sums[j]
            rollouts[ri] += len(outs[j])
            samples[ri] += len(outs[j])
    values = sums / np.maximum(samples, 1)
    intervals = [wilson_interval(float(v), int(s)) for v, s in zip(values, samples)]
    for e, ids in zip(episodes, per_episode):
        vals: list[float | None] = [float(values[i]) for i in ids]
        e.step_values = vals + [None] * (e.num_steps - len(vals))
        e.meta["mc_rollouts"] = [int(rollouts[i]) for i in ids]
        e.meta["mc_samples"] = [int(samples[i]) for i in ids]
        e.meta["mc_interval"] = [list(intervals[i]) for i in ids]
    half = np.array([(hi - lo) / 2 for lo, hi in intervals])
    stats.update({
        "mc/rollouts": int(rollouts.sum()),
        "mc/seconds": time.perf_counter() - t0,
        "mc/generate_seconds": t_gen,
        "mc/grade_seconds": t_grade,
        "mc/tokens": gen_tokens,
        "mc/tokens_per_s": gen_tokens / max(t_gen, 1e-9),
        "mc/tokens_per_episode": gen_tokens / max(len(episodes), 1),
        "mc/states_per_response": naive / max(len(episodes), 1),
        "mc/rollouts_per_state_mean": float(rollouts.mean()),
        "mc/rollouts_per_state_max": int(rollouts.max()),
        "mc/wilson_halfwidth_mean": float(half.mean()),
        "mc/share_exact_0_or_1": float(np.mean((values == 0.0) | (values == 1.0))),
        "mc/value_mean": float(values.mean()),
        "mc/value_variance": float(values.var()),
        # mean Bernoulli variance of the estimates themselves: V(1 − V) / n
        "mc/estimate_variance": float(np.mean(values * (1 - values) / np.maximum(samples, 1))),
    })
    return stats
