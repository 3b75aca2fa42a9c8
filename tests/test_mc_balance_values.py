"""Balanced MC's pure parts at their edges (vineppo/mc_balance.py), values by hand: what a rank
packs, a state no pass goes through, the split's errors and seeds, the results sent back and the
imbalance of no ranks."""

from __future__ import annotations

import numpy as np
import pytest

from vineppo.mc import MCRequest
from vineppo.mc_balance import (ShareResult, assemble_results, imbalance, merge_rank_requests, pack_requests,
                                split_requests)


def _req(q: int, prompt: list[int], prefix: list[int], passes: int = 1, expected: float = 0.0) -> MCRequest:
    return MCRequest(prompt, prefix, q, passes=passes, expected_tokens=expected)


def test_pack_sends_each_prompt_once_and_every_state_field():
    reqs = [_req(3, [1, 2], [], passes=2, expected=5.5), _req(3, [1, 2], [7]), _req(0, [9], [8, 8], passes=3)]
    p = pack_requests(reqs, np.array([1.0, 0.5, 2.0]), np.array([2, 1, 3]), 41)
    assert sorted(p.prompts) == [0, 3] and p.prompts[3].tolist() == [1, 2] and p.prompts[0].tolist() == [9]
    assert p.prompts[3].dtype == np.int32 and all(x.dtype == np.int32 for x in p.prefixes)
    assert p.question_index.tolist() == [3, 3, 0] and [x.tolist() for x in p.prefixes] == [[], [7], [8, 8]]
    assert p.passes.tolist() == [2, 1, 3] and p.expected_tokens.tolist() == [5.5, 0.0, 0.0]
    assert p.free_sums.tolist() == [1.0, 0.5, 2.0] and p.free_samples.tolist() == [2, 1, 3]
    assert p.split_seed == 41


def test_merge_of_a_state_without_passes_keeps_its_expected_tokens_finite():
    m = merge_rank_requests([pack_requests([_req(0, [1], [2], passes=0, expected=9.0)], np.zeros(1),
                                           np.zeros(1, dtype=np.int64), None)])
    # no pass: 0 tokens summed over max(0, 1) passes
    assert m.requests[0].passes == 0 and m.requests[0].expected_tokens == 0.0 and m.owners == [[0]]
    # one pass: its own expected tokens
    m = merge_rank_requests([pack_requests([_req(0, [1], [2], passes=1, expected=9.0)], np.zeros(1),
                                           np.zeros(1, dtype=np.int64), None)])
    assert m.requests[0].expected_tokens == 9.0


def test_split_errors_and_seeds():
    with pytest.raises(ValueError, match=r"^split_requests: world must be >= 1, got 0$"):
        split_requests([1.0], 0, seed=1)
    with pytest.raises(ValueError, match=r"^split_requests: by must be 'tokens' or 'count', got 'off'$"):
        split_requests([1.0], 1, seed=1, by="off")
    costs = [1.0] * 9
    # no seed shuffles as seed 0; a seed is taken modulo 2^63
    assert split_requests(costs, 4, None, "count") == split_requests(costs, 4, 0, "count")
    assert split_requests(costs, 4, 2**63 + 5, "count") == split_requests(costs, 4, 5, "count")
    assert split_requests(costs, 1, 3, "tokens") == [list(range(9))]
    # equal costs: dealt one by one to the rank with the fewest states, so 3, 2, 2, 2 states
    assert sorted(len(s) for s in split_requests(costs, 4, 3, "tokens")) == [2, 2, 2, 3]


def test_equal_loads_go_to_the_rank_with_fewer_states_then_the_lower_rank():
    # longest first: cost 2 to rank 0 (both at load 0: the lower rank), then a 1 to rank 1
    # (load 0 < 2) and the other 1 to rank 1 too (load 1 < 2)
    costs = [2.0, 1.0, 1.0]
    shares = split_requests(costs, 2, 0, "tokens")
    assert shares == [[0], [1, 2]]
    # loads tie at 0 at the start: the lowest rank first
    assert split_requests([5.0], 3, 0, "tokens") == [[0], [], []]


def test_assemble_returns_rollouts_and_names_the_missing_states():
    results = [ShareResult([1], np.array([0.5]), np.array([2]), np.array([7]), 0.1),
               ShareResult([0, 2], np.array([1.0, 0.0]), np.array([3, 1]), np.array([5, 6]), 0.2)]
    sums, samples, rollouts = assemble_results(results, 3)
    assert sums.tolist() == [1.0, 0.5, 0.0] and samples.tolist() == [3, 2, 1] and rollouts.tolist() == [5, 7, 6]
    with pytest.raises(RuntimeError, match=r"^balanced MC: 2 of 3 states came back from no ranks$"):
        assemble_results(results[:1], 3)
    with pytest.raises(RuntimeError, match=r"^balanced MC: 1 of 3 states came back from several ranks$"):
        assemble_results(results + [results[0]], 3)


def test_imbalance_of_no_ranks_and_of_one():
    assert imbalance([]) == 1.0
    assert imbalance([3.0]) == 1.0
    assert imbalance([1.0, 2.0, 3.0]) == 1.5  # the slowest 3 over the mean 2
