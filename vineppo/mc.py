"""VinePPO's Monte Carlo values (spec §1.3): states are token prefixes of the sampled response cut
at the first token of each reasoning step, deduplicated across the batch; V̂(s) = mean reward of the
continuations sampled from s.
"""

from __future__ import annotations

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


def estimate_mc_values(engine: Engine, task: Task, tokenizer, rows: Sequence[Row], episodes: Sequence[Episode], *,
                       k: int, cap: int | None, temperature: float, top_p: float, max_new_tokens: int,
                       max_sequence_length: int, stop: Sequence[str], seed: int | None) -> dict:
    """V̂(s) = mean reward of K continuations from each unique state; writes `episode.step_values`.

    All unique states go to the engine in one call with n=K. A continuation's reward is the task
    reward of the full response text (prefix steps + continuation); a continuation stopped by length,
    or running past max_sequence_length, scores 0.
    """
    t0 = time.perf_counter()
    requests, per_episode, naive = build_mc_requests(episodes, cap)
    stats = {"mc/states": naive, "mc/unique_states": len(requests), "mc/rollouts": len(requests) * k,
             "mc/engine_calls": 0}
    if not requests:
        for e in episodes:
            e.step_values = [None] * e.num_steps
        return stats
    params = SamplingParams(n=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                            stop=tuple(stop), seed=seed)
    outs = engine.generate([r.prompt_ids + r.prefix_response_ids for r in requests], params, desc="mc: rollouts")
    stats["mc/engine_calls"] = 1
    t_gen = time.perf_counter() - t0

    texts, owners, rows_for = [], [], []
    values = np.zeros(len(requests))
    gen_tokens = 0
    for ri, (req, comps) in enumerate(zip(requests, outs)):
        for c in comps:
            gen_tokens += len(c.token_ids)
            fits = len(req.prompt_ids) + len(req.prefix_response_ids) + len(c.token_ids) + 1 <= max_sequence_length
            if c.finish_reason == "stop" and fits:
                texts.append(decode_response(tokenizer, req.prefix_response_ids + list(c.token_ids)))
                owners.append(ri)
                rows_for.append(rows[req.question_index])
    t1 = time.perf_counter()
    for ri, r in zip(owners, task.rewards_many(texts, rows_for)):
        values[ri] += r
    values /= k
    for e, ids in zip(episodes, per_episode):
        vals: list[float | None] = [float(values[i]) for i in ids]
        e.step_values = vals + [None] * (e.num_steps - len(vals))
    stats.update({
        "mc/seconds": time.perf_counter() - t0,
        "mc/generate_seconds": t_gen,
        "mc/grade_seconds": time.perf_counter() - t1,
        "mc/tokens": gen_tokens,
        "mc/tokens_per_s": gen_tokens / max(t_gen, 1e-9),
        "mc/value_mean": float(values.mean()),
        "mc/value_variance": float(values.var()),
        # mean Bernoulli variance of the estimates themselves: V(1 − V) / K
        "mc/estimate_variance": float(np.mean(values * (1 - values) / k)),
    })
    return stats
