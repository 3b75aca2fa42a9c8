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
    # counts stay integers (they are summed into `mc/rollouts` and `mc/samples`)
    assert samples.dtype == rollouts.dtype == np.int64
    # a rank whose share is empty (more ranks than states) sends empty lists back
    empty = ShareResult([], np.array([]), np.array([], dtype=np.int64), np.array([]), 0.0)
    assert [a.tolist() for a in assemble_results(results + [empty], 3)] == [[1.0, 0.5, 0.0], [3, 2, 1], [5, 7, 6]]
    with pytest.raises(RuntimeError, match=r"^balanced MC: 2 of 3 states came back from no ranks$"):
        assemble_results(results[:1], 3)
    with pytest.raises(RuntimeError, match=r"^balanced MC: 1 of 3 states came back from several ranks$"):
        assemble_results(results + [results[0]], 3)


def test_imbalance_of_no_ranks_and_of_one():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean of an empty list ("Mean of empty slice")
        assert imbalance([]) == 1.0
    assert imbalance([3.0]) == 1.0
    assert imbalance([1.0, 2.0, 3.0]) == 1.5  # the slowest 3 over the mean 2


def test_mc_request_key_is_the_question_and_the_whole_token_prefix():
    a = _req(3, [1, 2], [3])
    assert a.key() == (3, (1, 2, 3))
    # the prompt and the response prefix are one sequence: where the cut falls does not matter
    assert a.key() == _req(3, [1], [2, 3]).key() != _req(4, [1, 2], [3]).key()


def _balanced_on_two_threads(requests, seeds, by):
    """`run_balanced` on two thread-ranks (rank r: `requests[r]`, split seed `seeds[r]`): per rank,
    the states its `run` was handed (as (question, prefix)), its result and the call's seconds."""
    import time

    from test_mc_balance import ThreadGroup
    from vineppo.mc_balance import run_balanced

    group, handed, out = ThreadGroup(2), [None, None], [None, None]

    def work(rank):
        def run(reqs, sums, samples):
            handed[rank] = [(r.question_index, tuple(r.prefix_response_ids)) for r in reqs]
            sums += 1.0
            samples += 2
            return [2] * len(reqs), {"rank": rank}
        t = time.perf_counter()
        res = run_balanced(group.member(rank), requests[rank], np.zeros(len(requests[rank])),
                           np.zeros(len(requests[rank]), dtype=np.int64), split_seed=seeds[rank], by=by, run=run)
        out[rank] = (res, time.perf_counter() - t)

    group.run(work)
    return handed, out


@pytest.mark.parametrize("by", ["count", "tokens"])
def test_run_balanced_splits_with_rank_0s_seed_and_the_split_asked_for(by):
    # 8 unique states of equal cost on rank 0 (the tokens split then only follows the shuffle),
    # 2 on rank 1; rank 1 asks for another seed, which every rank ignores
    requests = [[_req(0, [1], [10 + i], expected=4.0) for i in range(8)], [_req(1, [2], [i]) for i in range(2)]]
    costs = [5.0] * 8 + [1.0] * 2
    handed, out = _balanced_on_two_threads(requests, seeds=[123, 456], by=by)
    expect = split_requests(costs, 2, 123, by)
    states = [(0, (10 + i,)) for i in range(8)] + [(1, (i,)) for i in range(2)]
    assert handed == [[states[i] for i in share] for share in expect]
    # the other rank's seed, no seed and the other split each give another split here
    for other in (split_requests(costs, 2, 456, by), split_requests(costs, 2, None, by),
                  split_requests(costs, 2, 123, "tokens" if by == "count" else "count")):
        assert other != expect
    for rank, (res, wall) in enumerate(out):
        assert res.counters == {"rank": rank} and res.share_states == len(expect[rank])
        assert res.share_rollouts == 2 * len(expect[rank])
        assert list(res.sums) == [1.0] * len(requests[rank]) and list(res.samples) == [2] * len(requests[rank])
        # each rank's seconds: the time its `run` took, within the call's own
        assert len(res.rank_seconds) == 2 and all(0 <= s <= wall for s in res.rank_seconds)


def test_equal_costs_are_dealt_in_the_shuffled_order():
    # 40 states of cost 2 or 1 (alternating), 2 ranks: longest first, and within a cost the
    # shuffled order (a stable sort), each state to the rank with the least load, then fewest
    # states, then the lower rank: so the ranks take turns along each cost's shuffled order
    costs = [2.0, 1.0] * 20
    perm = [int(i) for i in np.random.default_rng(5).permutation(40)]
    twos, ones = [i for i in perm if costs[i] == 2.0], [i for i in perm if costs[i] == 1.0]
    assert split_requests(costs, 2, 5, "tokens") == [sorted(twos[0::2] + ones[0::2]), sorted(twos[1::2] + ones[1::2])]


def test_on_equal_loads_a_rank_with_fewer_states_goes_first():
    # costs 2, 1, 1, 1 on 2 ranks: 2 -> rank 0; 1 -> rank 1; 1 -> rank 1 (load 1 < 2); then loads tie
    # at 2 and rank 0 has fewer states (1 < 2): the last state goes to rank 0
    shares = split_requests([2.0, 1.0, 1.0, 1.0], 2, 0, "tokens")
    assert shares[0][0] == 0 and [len(s) for s in shares] == [2, 2]


def test_request_seeds_are_pinned_and_fit_a_signed_32_bit_int():
    from vineppo.mc import request_seed

    # known answers: a state's seed is part of what makes a run reproducible (a resumed run, another
    # rank, another release of vineppo draw the same MC rollouts), so a change of the hash shows here
    assert request_seed(9, _req(0, [80], [10, 120])) == 30732222
    assert request_seed(123456789, _req(7, [1, 2, 3], [])) == 1634358158
    # engines take a signed 32-bit seed: every value in [0, 2^31 - 1), spread over that range
    seeds = [request_seed(s, _req(q, [1, 2], [q, s])) for s in range(20) for q in range(10)]
    assert all(type(x) is int and 0 <= x < 2**31 - 1 for x in seeds)
    assert max(seeds) > 2**30 and len(set(seeds)) == 200
