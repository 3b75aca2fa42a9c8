"""MC work balanced across processes (spec §1.3: the official code deduplicates the value-estimation
requests of every GPU, shuffles the unique ones with the seed and reshards them evenly).

Without it each rank estimates the states of its own episodes, and the rank with the longest
responses sets every iteration's MC time while the others wait (under ZeRO-3 inside a collective).
Balanced MC (`mc.balance`, split by `mc.balance_split`), with several processes:

1. every rank sends its unique states (`pack_requests`) to every rank (one all-gather);
2. `merge_rank_requests` deduplicates them over all ranks: two states are one when they belong to
   the same question and have the same token prefix;
3. `split_requests` deals the unique states out to the ranks, the same split on every rank (a pure
   function of the gathered states and rank 0's seed);
4. each rank runs the MC rounds of its share (fixed K or adaptive: a state's rounds depend on its
   own samples only, so a share runs them on its own);
5. a second all-gather brings every state's sums back (`assemble_results`), and each rank takes
   those of its own states (`MergedRequests.owners`).

With per-state seeds (`vineppo.mc.request_seed`) and an engine that honours them, a state's
rollouts do not depend on which rank runs it: balanced and unbalanced MC then give the same values.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from vineppo.mc import MCRequest

#: `mc.balance_split`: by estimated continuation tokens, or by number of states (the official
#: code's even split)
SPLITS = ("tokens", "count")


@dataclass
class RankGroup:
    """The processes MC is balanced over: this one's rank, their number, and `gather(obj)`, a
    collective every rank calls with its object that returns all of them in rank order."""
    rank: int
    world: int
    gather: Callable[[Any], list]

    @classmethod
    def from_accelerator(cls, acc) -> "RankGroup":
        from accelerate.utils import gather_object  # torch's all_gather_object, flattened one level

        return cls(acc.process_index, acc.num_processes, lambda obj: gather_object([obj]))


@dataclass
class PackedRequests:
    """One rank's unique states as sent to the others: each question's prompt once, then per state
    its question, response prefix (int32), `passes`, `expected_tokens` and free samples (the
    episode outcomes counted as samples: their reward sum and count)."""
    prompts: dict[int, np.ndarray]
    question_index: np.ndarray
    prefixes: list[np.ndarray]
    passes: np.ndarray
    expected_tokens: np.ndarray
    free_sums: np.ndarray
    free_samples: np.ndarray
    #: the seed this rank would split with; every rank uses rank 0's
    split_seed: int | None


def pack_requests(requests: Sequence[MCRequest], free_sums: np.ndarray, free_samples: np.ndarray,
                  split_seed: int | None) -> PackedRequests:
    prompts: dict[int, np.ndarray] = {}
    for r in requests:
        if r.question_index not in prompts:
            prompts[r.question_index] = np.asarray(r.prompt_ids, dtype=np.int32)
    return PackedRequests(
        prompts=prompts,
        question_index=np.asarray([r.question_index for r in requests], dtype=np.int64),
        prefixes=[np.asarray(r.prefix_response_ids, dtype=np.int32) for r in requests],
        passes=np.asarray([r.passes for r in requests], dtype=np.int64),
        expected_tokens=np.asarray([r.expected_tokens for r in requests], dtype=float),
        free_sums=np.asarray(free_sums, dtype=float), free_samples=np.asarray(free_samples, dtype=np.int64),
        split_seed=split_seed)


@dataclass
class MergedRequests:
    """The unique states of all ranks, in first-appearance order (rank 0's first)."""
    requests: list[MCRequest]
    free_sums: np.ndarray
    free_samples: np.ndarray
    #: per rank, the index in `requests` of each of its own states, in its local order
    owners: list[list[int]]


def merge_rank_requests(packs: Sequence[PackedRequests]) -> MergedRequests:
    """Deduplicate the states of every rank. A state sent by several ranks becomes one, whose
    `passes` and free samples add up and whose `expected_tokens` is the mean over all its passes."""
    index: dict[tuple[int, bytes], int] = {}
    requests: list[MCRequest] = []
    remaining: list[float] = []
    free_sums: list[float] = []
    free_samples: list[int] = []
    owners: list[list[int]] = []
    for p in packs:
        mine = []
        for j, (q, prefix) in enumerate(zip(p.question_index, p.prefixes)):
            q = int(q)
            prompt = p.prompts[q]
            key = (q, prompt.tobytes() + b"|" + prefix.tobytes())
            g = index.get(key)
            if g is None:
                g = index[key] = len(requests)
                requests.append(MCRequest(prompt.tolist(), prefix.tolist(), q, passes=0))
                remaining.append(0.0)
                free_sums.append(0.0)
                free_samples.append(0)
            requests[g].passes += int(p.passes[j])
            remaining[g] += float(p.expected_tokens[j]) * int(p.passes[j])
            free_sums[g] += float(p.free_sums[j])
            free_samples[g] += int(p.free_samples[j])
            mine.append(g)
        owners.append(mine)
    for r, rem in zip(requests, remaining):
        r.expected_tokens = rem / max(r.passes, 1)
    return MergedRequests(requests, np.asarray(free_sums, dtype=float), np.asarray(free_samples, dtype=np.int64),
                          owners)


def request_cost(request: MCRequest) -> float:
    """The split's estimate of a state's work: its expected continuation tokens, plus one so that
    every state counts. Decoding dominates MC (each of the K continuations is decoded token by
    token; the prefix is prefilled once and largely served from the prefix cache), and a
    continuation from a state is drawn from the policy that drew the responses through it, so the
    rest of those responses is the best length estimate at hand."""
    return 1.0 + request.expected_tokens


def split_requests(costs: Sequence[float], world: int, seed: int | None, by: str = "tokens") -> list[list[int]]:
    """Deal states `0..len(costs)-1` out to `world` ranks; the same on every rank.

    The states are first shuffled with `seed`. `count` (the official code): the shuffled order cut
    into `world` contiguous parts whose sizes differ by at most one. `tokens`: longest first, each
    state to the rank with the least cost so far (fewest states, then lowest rank, on a tie), equal
    costs in shuffled order: the slowest rank then exceeds the mean by at most one state's cost.
    Each share is returned in ascending index order (first appearance: a response's nested
    prefixes together, which keeps the engine's prefix cache warm)."""
    if world < 1:
        raise ValueError(f"split_requests: world must be >= 1, got {world}")
    if by not in SPLITS:
        raise ValueError(f"split_requests: by must be 'tokens' or 'count', got {by!r}")
    n = len(costs)
    order = np.random.default_rng(0 if seed is None else int(seed) % (2**63)).permutation(n)
    if by == "count":
        return [sorted(int(i) for i in part) for part in np.array_split(order, world)]
    cost = np.asarray(costs, dtype=float)
    order = order[np.argsort(-cost[order], kind="stable")]
    heap = [(0.0, 0, r) for r in range(world)]  # (load, states, rank)
    shares: list[list[int]] = [[] for _ in range(world)]
    for i in order:
        load, count, r = heapq.heappop(heap)
        shares[r].append(int(i))
        heapq.heappush(heap, (load + float(cost[i]), count + 1, r))
    return [sorted(s) for s in shares]


@dataclass
class ShareResult:
    """What one rank sends back: for each state of its share (global indices), the reward sum and
    sample count (free samples included) and its engine rollouts, and its rollout seconds."""
    indices: list[int]
    sums: np.ndarray
    samples: np.ndarray
    rollouts: np.ndarray
    seconds: float


def assemble_results(results: Sequence[ShareResult], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every state's (sums, samples, rollouts) from the ranks' shares; each state must come back
    from exactly one rank."""
    sums, samples, rollouts = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    seen = np.zeros(n, dtype=np.int64)
    for res in results:
        idx = np.asarray(res.indices, dtype=np.int64)
        sums[idx] = res.sums
        samples[idx] = res.samples
        rollouts[idx] = res.rollouts
        seen[idx] += 1
    if not (seen == 1).all():
        raise RuntimeError(f"balanced MC: {int((seen != 1).sum())} of {n} states came back from "
                           f"{'no' if (seen == 0).any() else 'several'} ranks")
    return sums, samples, rollouts


def imbalance(seconds: Sequence[float]) -> float:
    """The slowest rank's seconds over the ranks' mean (1.0: perfectly balanced)."""
    mean = float(np.mean(seconds)) if len(seconds) else 0.0
    return float(np.max(seconds)) / mean if mean > 0 else 1.0


@dataclass
class BalancedRun:
    """This rank's states after balanced MC, in its local order, and what its share cost."""
    sums: np.ndarray
    samples: np.ndarray
    rollouts: np.ndarray
    #: the counters of the rounds this rank ran (engine calls, tokens, seconds)
    counters: dict
    share_states: int
    share_rollouts: int
    #: every rank's seconds running its share
    rank_seconds: list[float]


def run_balanced(group: RankGroup, requests: Sequence[MCRequest], free_sums: np.ndarray, free_samples: np.ndarray,
                 *, split_seed: int | None, by: str,
                 run: Callable[[list[MCRequest], np.ndarray, np.ndarray], tuple[np.ndarray, dict]]) -> BalancedRun:
    """Steps 1–5 of the module docstring; `run(requests, sums, samples)` runs the MC rounds of a
    share (adding to `sums` / `samples` in place) and returns its rollouts per state and counters.
    Every rank calls this (two collectives), with or without states of its own."""
    packs = group.gather(pack_requests(requests, free_sums, free_samples, split_seed))
    merged = merge_rank_requests(packs)
    shares = split_requests([request_cost(r) for r in merged.requests], group.world, packs[0].split_seed, by)
    share = shares[group.rank]
    sums, samples = merged.free_sums[share].copy(), merged.free_samples[share].copy()
    t = time.perf_counter()
    rollouts, counters = run([merged.requests[i] for i in share], sums, samples)
    seconds = time.perf_counter() - t
    results = group.gather(ShareResult(share, sums, samples, np.asarray(rollouts, dtype=np.int64), seconds))
    g_sums, g_samples, g_rollouts = assemble_results(results, len(merged.requests))
    own = merged.owners[group.rank]
    return BalancedRun(g_sums[own], g_samples[own], g_rollouts[own], counters, len(share),
                       int(np.sum(rollouts)), [r.seconds for r in results])
