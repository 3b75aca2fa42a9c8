"""VinePPO's Monte Carlo values (spec §1.3): states are token prefixes of the sampled response cut
at the first token of each reasoning step, deduplicated across the batch; V̂(s) = mean reward of the
continuations sampled from s.
"""

from __future__ import annotations

import hashlib
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
    #: how many sampled responses pass through the state
    passes: int = 1
    #: the mean number of response tokens after the state in those responses: the expected length
    #: of a continuation, the cost by which balanced MC splits the work (`vineppo.mc_balance`)
    expected_tokens: float = 0.0

    def key(self) -> tuple:
        """What makes two states one: the same question and the same token prefix."""
        return (self.question_index, tuple(self.prompt_ids) + tuple(self.prefix_response_ids))


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
    """Deduplicate identical states (same question, same token prefix) across the whole local batch.

    Returns (unique requests, per-episode list of request indices per state, naive state count).
    Requests come out in first-appearance order — each response's nested prefixes adjacent, s_0
    shared by a question's samples — which keeps the engine's prefix cache warm.
    """
    index: dict[tuple, int] = {}
    requests: list[MCRequest] = []
    remaining: list[int] = []  # response tokens after the state, summed over the responses through it
    per_episode: list[list[int]] = []
    naive = 0
    for e in episodes:
        ids = []
        for t in mc_state_token_counts(e, cap):
            key = (e.question_index, tuple(e.prompt_ids) + tuple(e.response_ids[:t]))
            naive += 1
            if key not in index:
                index[key] = len(requests)
                requests.append(MCRequest(list(e.prompt_ids), list(e.response_ids[:t]), e.question_index, passes=0))
                remaining.append(0)
            r = index[key]
            requests[r].passes += 1
            remaining[r] += len(e.response_ids) - t
            ids.append(r)
        per_episode.append(ids)
    for req, rem in zip(requests, remaining):
        req.expected_tokens = rem / req.passes
    return requests, per_episode, naive


def request_seed(seed: int, request: MCRequest) -> int:
    """A state's own sampling seed for a round whose seed is `seed`: a BLAKE2 hash of that seed, the
    question and the state's tokens. Named by its content, a state gets the same rollouts whichever
    process runs it and wherever it sits in the engine call (where the engine honours
    `SamplingParams.request_seeds`), so balanced and unbalanced MC give the same values."""
    h = hashlib.blake2b(f"vineppo-mc|{int(seed)}|{request.question_index}|".encode(), digest_size=8)
    h.update(np.asarray(request.prompt_ids + request.prefix_response_ids, dtype=np.int64).tobytes())
    return int.from_bytes(h.digest(), "little") % (2**31 - 1)


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


def episode_outcome_samples(episodes: Sequence[Episode], per_episode: Sequence[Sequence[int]], n: int,
                            budget: MCBudget) -> tuple[np.ndarray, np.ndarray]:
    """Per request, the reward sum and count of the free samples (`include_episode_outcome`: each
    sampled response counts once for every state it passes through); zeros without them."""
    sums, samples = np.zeros(n), np.zeros(n, dtype=np.int64)
    if budget.include_episode_outcome:
        for e, ids in zip(episodes, per_episode):
            for ri in ids:
                sums[ri] += e.reward
                samples[ri] += 1
    return sums, samples


def run_mc_rounds(engine: Engine, task: Task, tokenizer, rows: Sequence[Row], requests: Sequence[MCRequest],
                  sums: np.ndarray, samples: np.ndarray, budget: MCBudget, *, temperature: float, top_p: float,
                  max_new_tokens: int, max_sequence_length: int, stop: Sequence[str], seed: int | None
                  ) -> tuple[np.ndarray, dict]:
    """The rollouts of `requests`: one engine call with n=K (fixed budget), or rounds while a state
    is too uncertain (adaptive: decided by each state's own samples, free ones included). Adds every
    round's reward sums and counts to `sums` / `samples` in place; returns the engine rollouts per
    request and the counters (engine calls, generated tokens, generate / grade seconds).

    With `seed`, every request gets a seed of its own (`request_seed`) unless the engine gives the
    whole call one seed (`engine.shared_request_seed`, the official code's common random numbers)."""
    rollouts = np.zeros(len(requests), dtype=np.int64)
    counters = {"engine_calls": 0, "tokens": 0, "generate_seconds": 0.0, "grade_seconds": 0.0}
    own_seeds = seed is not None and not getattr(engine, "shared_request_seed", False)
    active = list(range(len(requests)))
    for r, n in enumerate(budget.round_sizes()):
        if budget.adaptive and r > 0:
            active = [i for i in active
                      if wilson_halfwidth(sums[i] / samples[i], int(samples[i])) > budget.target_halfwidth]
        if not active:
            break
        seed_r = round_seed(seed, r)
        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                stop=tuple(stop), seed=seed_r,
                                request_seeds=tuple(request_seed(seed_r, requests[i]) for i in active)
                                if own_seeds else None)
        t = time.perf_counter()
        outs = engine.generate([requests[i].prompt_ids + requests[i].prefix_response_ids for i in active], params,
                               desc=f"mc: rollouts (round {r + 1})" if budget.adaptive else "mc: rollouts")
        counters["generate_seconds"] += time.perf_counter() - t
        counters["engine_calls"] += 1
        t = time.perf_counter()
        round_sums, tokens = score_rollouts(task, tokenizer, rows, [requests[i] for i in active], outs,
                                            max_sequence_length)
        counters["grade_seconds"] += time.perf_counter() - t
        counters["tokens"] += tokens
        for j, ri in enumerate(active):
            sums[ri] += round_sums[j]
            rollouts[ri] += len(outs[j])
            samples[ri] += len(outs[j])
    return rollouts, counters


def estimate_mc_values(engine: Engine, task: Task, tokenizer, rows: Sequence[Row], episodes: Sequence[Episode], *,
                       k: int, cap: int | None, temperature: float, top_p: float, max_new_tokens: int,
                       max_sequence_length: int, stop: Sequence[str], seed: int | None,
                       budget: MCBudget | None = None, group=None, balance: str | None = "tokens") -> dict:
    """V̂(s) = mean reward of the continuations from each unique state; writes `episode.step_values`
    (and, per state, `episode.meta["mc_rollouts"]` / `["mc_interval"]`).

    Without `budget` (or with a fixed one) all unique states go to the engine in one call with
    n=K. An adaptive budget runs rounds, each one engine call for the states still too uncertain.
    A continuation's reward is the task reward of the full response text (prefix steps +
    continuation); a continuation stopped by length, or running past max_sequence_length, scores 0.

    With a `group` of several processes (`vineppo.mc_balance.RankGroup`, a collective: every rank
    calls this) and `balance` "tokens" or "count" (the split), the states of all ranks are
    deduplicated, split evenly and their values sent back (`vineppo.mc_balance`); None (or no
    group): each rank runs its own states. The split is rank 0's `seed`'s: pass every rank the same `seed` (the states'
    own seeds then make the result independent of the split) unless the engine shares one seed
    per call.
    """
    budget = budget or MCBudget(k=k)
    t0 = time.perf_counter()
    requests, per_episode, naive = build_mc_requests(episodes, cap)
    free_sums, free_samples = episode_outcome_samples(episodes, per_episode, len(requests), budget)
    sampling = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                    max_sequence_length=max_sequence_length, stop=stop, seed=seed)

    def run(reqs, sums, samples):
        return run_mc_rounds(engine, task, tokenizer, rows, reqs, sums, samples, budget, **sampling)

    distributed = group is not None and group.world > 1
    rank_seconds = None
    if distributed and balance is not None:
        from vineppo.mc_balance import run_balanced

        done = run_balanced(group, requests, free_sums, free_samples, split_seed=seed, by=balance, run=run)
        sums, samples, rollouts, counters = done.sums, done.samples, done.rollouts, done.counters
        share_states, share_rollouts, rank_seconds = done.share_states, done.share_rollouts, done.rank_seconds
    else:
        sums, samples = free_sums, free_samples
        t = time.perf_counter()
        rollouts, counters = run(requests, sums, samples)
        share_states, share_rollouts = len(requests), int(rollouts.sum())
        if distributed:
            rank_seconds = group.gather(time.perf_counter() - t)
    # sums over the processes (loop.py) count the work done: the states and rollouts each ran
    stats = {"mc/states": naive, "mc/unique_states": share_states, "mc/rollouts": share_rollouts,
             "mc/engine_calls": counters["engine_calls"]}
    if rank_seconds is not None:
        from vineppo.mc_balance import imbalance

        # the slowest rank's rollout seconds over the ranks' mean (1 = balanced), the same on every rank
        stats["mc/rank_seconds_max"] = float(max(rank_seconds))
        stats["mc/imbalance"] = imbalance(rank_seconds)
    gen_tokens, t_gen = counters["tokens"], counters["generate_seconds"]
    stats.update({
        "mc/seconds": time.perf_counter() - t0,
        "mc/generate_seconds": t_gen,
        "mc/grade_seconds": counters["grade_seconds"],
        "mc/tokens": gen_tokens,
        "mc/tokens_per_s": gen_tokens / max(t_gen, 1e-9),
        "mc/tokens_per_episode": gen_tokens / max(len(episodes), 1),
    })
    if not requests:
        for e in episodes:
            e.step_values = [None] * e.num_steps
        return stats
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
