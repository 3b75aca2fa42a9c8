"""Ranking alternative next steps: the paper's credit-assignment analysis (§6), with the official
analyzer's protocol (`action_ranking_analyzer`, spec §5).

From a probed state s (prompt + response tokens up to a step start), `alternatives` continuations
are sampled and each is cut at the task's next step boundary (`next_step`): the distinct next
steps a_1 … a_m. A state with at least `min_alternatives` of them is ranked: every s + a_i is valued
by `k` rollouts (the truth) and by each estimator — the MC estimator from `mc_k` rollouts drawn in
the same engine call, and for PPO the critic's V(s + a_i) (`Trainer.critic_state_values`). An
estimator that credits steps well orders the alternatives as the truth does: `ranking_score`.
"""

from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from vineppo.engine.base import Engine, SamplingParams
from vineppo.mc import MCRequest, rollout_rewards
from vineppo.tasks.base import Row, Task
from vineppo.tokens import decode_response, token_char_starts


def ranking_score(truth: Sequence[float], estimate: Sequence[float], *,
                  skip_equal_truth: bool = False) -> tuple[int, int]:
    """(correct, scored) over the pairs of alternatives of one state, as the official analyzer
    scores them: every pair is scored, and it is correct only when the estimate orders it strictly
    the way the truth does, (t_i − t_j)·(e_i − e_j) > 0. A tie in the estimate is therefore wrong (a
    critic that gives every step the same value scores 0, not ½), and so is a pair of equal truth.
    `skip_equal_truth=True` leaves pairs of equal truth out instead, so a random estimate scores
    50 %. Accuracy = Σ correct / Σ scored, over states."""
    if len(truth) != len(estimate):
        raise ValueError(f"ranking_score: {len(truth)} true values but {len(estimate)} estimates")
    correct = scored = 0
    for i, j in itertools.combinations(range(len(truth)), 2):
        if skip_equal_truth and truth[i] == truth[j]:
            continue
        scored += 1
        correct += (truth[i] - truth[j]) * (estimate[i] - estimate[j]) > 0
    return correct, scored


def oracle_ranking_score(estimate: Sequence[float], pairs: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(correct, scored) over the oracle's pairs (i, j) of one state (a_i correct, a_j wrong): correct
    when the estimate puts a_i strictly above a_j (a tie is wrong, as in `ranking_score`)."""
    return sum(estimate[i] > estimate[j] for i, j in pairs), len(pairs)


def oracle_pairs(task: Task, tokenizer, row: Row, prefix_ids: Sequence[int],
                 texts: Sequence[str]) -> list[tuple[int, int]] | None:
    """The task oracle's ordered pairs of the alternative next steps `texts` from the state
    `prefix_ids` (`oracle_step_pairs(row, prefix_text, texts)`), None when the task has no oracle."""
    oracle = getattr(task, "oracle_step_pairs", None)
    if oracle is None:
        return None
    return [tuple(p) for p in oracle(row, decode_response(tokenizer, list(prefix_ids)), list(texts))]


def next_step(task: Task, tokenizer, prefix_ids: Sequence[int], continuation_ids: Sequence[int],
              stopped: bool) -> tuple[list[int], str] | None:
    """The next reasoning step that `continuation_ids` takes from the state `prefix_ids` (response
    tokens at a step start): its tokens and text, or None when the continuation gives no whole step.

    The task's step splitter runs on the joined text (prefix + continuation), as for episodes; the
    step is the piece from the prefix's end to the next boundary, and its tokens are the
    continuation's tokens whose first character lies in it (a token belongs to the step holding its
    first character, `vineppo.tokens.step_token_starts`), so prefix + step is exactly the MC state
    the response would reach there. None when the split has no boundary at the prefix's end (the
    continuation merged into the prefix's last step), when the piece is empty, or when it runs to
    the end of a continuation that did not stop by itself (cut by the length limit mid-step)."""
    prefix_text = decode_response(tokenizer, prefix_ids)
    ids = list(prefix_ids) + list(continuation_ids)
    text = decode_response(tokenizer, ids)
    if not text.startswith(prefix_text):
        return None
    bounds = task.split_steps(text)
    start = len(prefix_text)
    if start not in bounds:
        return None
    end = next((b for b in bounds if b > start), None)
    if end is None or (end == len(text) and not stopped):
        return None
    cut = bisect_left(token_char_starts(tokenizer, ids, text), end) if end < len(text) else len(ids)
    step = ids[len(prefix_ids): cut]
    if not step:
        return None
    return step, text[start:end]


@dataclass
class RankedState:
    #: index into the probe's states
    state: int
    #: the distinct next steps (first-sampled order): response tokens and text
    steps: list[list[int]]
    texts: list[str]
    #: mean reward of `k` rollouts from each s + a_i
    truth: list[float]
    #: mean reward of `mc_k` rollouts from each s + a_i (the MC estimator)
    mc: list[float]
    #: PPO: the critic's V(s + a_i) (set by the loop with the critic that credited this iteration)
    critic: list[float] | None = None
    #: where the task has an exact oracle of steps (`oracle_step_pairs`): the pairs (i, j) with a_i
    #: keeping the solution correct and a_j making it wrong, so V(s + a_i) > 0 = V(s + a_j); else None
    oracle_pairs: list[tuple[int, int]] | None = None

    def estimates(self) -> dict[str, list[float]]:
        return {"mc": self.mc, **({"critic": self.critic} if self.critic is not None else {})}


def distinct_next_steps(task: Task, tokenizer, prefix_ids: Sequence[int], completions) -> list[tuple[list[int], str]]:
    """The distinct next steps (by text) among sampled continuations, in first-sampled order."""
    seen: dict[str, list[int]] = {}
    for c in completions:
        found = next_step(task, tokenizer, prefix_ids, c.token_ids, stopped=c.finish_reason == "stop")
        if found is not None and found[1] not in seen:
            seen[found[1]] = found[0]
    return [(ids, text) for text, ids in seen.items()]


def rank_alternatives(engine: Engine, task: Task, tokenizer, rows: Sequence[Row], requests: Sequence[MCRequest],
                      state_ids: Sequence[int], *, alternatives: int, min_alternatives: int, k: int, mc_k: int,
                      temperature: float, top_p: float, max_new_tokens: int, max_sequence_length: int,
                      stop: Sequence[str], seeds: tuple[int | None, int | None]) -> tuple[list[RankedState], dict]:
    """Sample `alternatives` continuations from each state (`requests`, one engine call), keep the
    states with at least `min_alternatives` distinct next steps, and value every state + step by
    `k` + `mc_k` rollouts (a second engine call: the first `k` are the truth, the rest the MC
    estimate). `seeds`: one per engine call."""
    if k < 1 or mc_k < 1:
        raise ValueError(f"rank_alternatives needs k >= 1 and mc_k >= 1 rollouts per step, got k={k}, mc_k={mc_k}")
    t0 = time.perf_counter()
    stats = {"probe/ranked_states": 0, "probe/alternative_steps": 0, "probe/ranking_tokens": 0}
    if not requests or alternatives < 1:
        return [], stats
    sample = SamplingParams(n=alternatives, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                            stop=tuple(stop), seed=seeds[0])
    outs = engine.generate([r.prompt_ids + r.prefix_response_ids for r in requests], sample,
                           desc="probe: alternative steps")
    tokens = sum(len(c.token_ids) for comps in outs for c in comps)
    ranked: list[RankedState] = []
    value_requests: list[MCRequest] = []
    for sid, req, comps in zip(state_ids, requests, outs):
        steps = distinct_next_steps(task, tokenizer, req.prefix_response_ids, comps)
        if len(steps) < min_alternatives:
            continue
        texts = [t for _, t in steps]
        ranked.append(RankedState(sid, [ids for ids, _ in steps], texts, [], [],
                                  oracle_pairs=oracle_pairs(task, tokenizer, rows[req.question_index],
                                                            req.prefix_response_ids, texts)))
        value_requests += [MCRequest(req.prompt_ids, req.prefix_response_ids + ids, req.question_index)
                           for ids, _ in steps]
    if value_requests:
        params = SamplingParams(n=k + mc_k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                                stop=tuple(stop), seed=seeds[1])
        outs = engine.generate([r.prompt_ids + r.prefix_response_ids for r in value_requests], params,
                               desc="probe: alternative rollouts")
        tokens += sum(len(c.token_ids) for comps in outs for c in comps)
        rewards = iter(rollout_rewards(task, tokenizer, rows, value_requests, outs, max_sequence_length))
        for rs in ranked:
            for _ in rs.steps:
                r = next(rewards)
                rs.truth.append(float(np.mean(r[:k])))
                rs.mc.append(float(np.mean(r[k:])))
    stats.update({"probe/ranked_states": len(ranked), "probe/alternative_steps": len(value_requests),
                  "probe/ranking_tokens": tokens, "probe/ranking_seconds": time.perf_counter() - t0})
    return ranked, stats


def ranking_counts(ranked: Sequence[RankedState], *, oracle: bool = False) -> dict[str, tuple[int, int]]:
    """estimator → (correct, scored) pairs, summed over the ranked states: against the rollouts'
    truth (`ranking_score`), or with `oracle=True` over the task oracle's pairs
    (`oracle_ranking_score`; states without oracle pairs add nothing)."""
    out: dict[str, tuple[int, int]] = {}
    for rs in ranked:
        if oracle and rs.oracle_pairs is None:
            continue
        for name, est in rs.estimates().items():
            c, n = oracle_ranking_score(est, rs.oracle_pairs) if oracle else ranking_score(rs.truth, est)
            c0, n0 = out.get(name, (0, 0))
            out[name] = (c0 + c, n0 + n)
    return out
