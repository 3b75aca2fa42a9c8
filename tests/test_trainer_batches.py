"""The trainer's batch bookkeeping and schedules exactly (vineppo/trainer.py): the LR factor of
each optimizer step, the critic's fit, which positions of a padded batch are actions, placing
per-action values there and reading them back, and the minibatches of an iteration."""

from __future__ import annotations

import math

import pytest
import torch

from vineppo.episodes import Episode
from vineppo.trainer import (collate, critic_fit_metrics, gather_actions, lr_lambda, minibatch_schedule,
                             scatter_actions)


# ---- lr_lambda ---------------------------------------------------------------------------------
def test_linear_warmup_then_linear_decay_hand_computed():
    f = lr_lambda(10, 0.2)  # warm-up ceil(0.2 · 10) = 2 steps, linear by default
    assert [f(s) for s in range(12)] == pytest.approx([0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8,
                                                       1 / 8, 0.0, 0.0])


def test_warmup_steps_round_up():
    f = lr_lambda(10, 0.15)  # ceil(1.5) = 2
    assert f(0) == 0.5 and f(1) == 1.0
    f = lr_lambda(10, 0.0)  # no warm-up: the decay from step 0
    assert f(0) == 1.0 and f(5) == 0.5


def test_constant_schedule_after_warmup():
    f = lr_lambda(10, 0.3, "constant")
    assert [f(s) for s in range(5)] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])
    assert f(100) == 1.0


def test_log_warmup_lasts_at_least_two_steps():
    f = lr_lambda(100, 0.01, "linear", "log")  # ceil(1) = 1 -> 2 steps: log(1)/log 2 = 0, then the decay
    assert f(0) == 0.0 and f(1) == pytest.approx(98 / 98)
    f = lr_lambda(100, 0.04, "linear", "log")  # 4 steps: log(s + 1) / log 4
    assert [f(s) for s in range(4)] == pytest.approx([0.0, math.log(2) / math.log(4), math.log(3) / math.log(4), 1.0])
    assert f(4) == pytest.approx(96 / 96) and f(52) == pytest.approx(48 / 96)
    assert lr_lambda(100, 0.0, "linear", "log")(0) == 1.0  # no warm-up stays none


def test_one_warmup_step_then_the_decay_over_the_rest():
    f = lr_lambda(10, 0.1)  # ceil(1) = 1 warm-up step (1 / 1), then (10 − s) / 9
    assert [f(0), f(1), f(5), f(10)] == pytest.approx([1.0, 1.0, 5 / 9, 0.0])
    f = lr_lambda(2, 0.5)   # one warm-up step and one decay step: (2 − 1) / (2 − 1)
    assert [f(0), f(1), f(2)] == pytest.approx([1.0, 1.0, 0.0])


def test_decay_when_warmup_covers_every_step():
    f = lr_lambda(2, 1.0)
    assert [f(0), f(1), f(2)] == [0.5, 1.0, 0.0]


def test_schedule_and_shape_are_checked():
    with pytest.raises(ValueError, match=r"^lr schedule must be 'linear' or 'constant', got 'cosine'$"):
        lr_lambda(10, 0.1, "cosine")
    with pytest.raises(ValueError, match=r"^warmup shape must be 'log' or 'linear', got 'exp'$"):
        lr_lambda(10, 0.1, "linear", "exp")


# ---- critic_fit_metrics ------------------------------------------------------------------------
def test_critic_fit_hand_computed():
    # returns (1, 3, 5), values (1, 2, 3): |V − G| = (0, 1, 2) -> 1; EV = 1 − Var(0, 1, 2) / Var(1, 3, 5) = 1 − (2/3)/(8/3)
    m = critic_fit_metrics([[1.0, 2.0], [3.0]], [[1.0, 3.0], [5.0]])
    assert m == {"critic/value_mae": 1.0, "critic/explained_variance": pytest.approx(0.75)}
    assert critic_fit_metrics([[], []], [[], []]) == {}
    # worse than a constant: EV < 0
    assert critic_fit_metrics([[5.0, 1.0]], [[1.0, 5.0]])["critic/explained_variance"] == pytest.approx(-3.0)


# ---- collate / scatter / gather ----------------------------------------------------------------
def _ep(prompt, response, finished, stop_token_id=None):
    return Episode(0, 0, list(prompt), list(response), "", finished, False, 0.0, [0, 0], [0] * len(response),
                   stop_token_id=stop_token_id)


def test_collate_pads_and_marks_the_actions():
    eps = [_ep([5, 6], [7, 8], finished=True), _ep([9], [3], finished=False), _ep([4, 4, 4], [], finished=True,
                                                                              stop_token_id=1)]
    b = collate(eps, eos_id=2, pad_id=0, device="cpu")
    # rows: prompt + response (+ the end token when finished), padded with 0 to the longest (5)
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 2], [9, 3, 0, 0, 0], [4, 4, 4, 1, 0]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]]
    # position t predicts token t + 1: actions start at position len(prompt) − 1
    assert b.action_mask.tolist() == [[0, 1, 1, 1], [1, 0, 0, 0], [0, 0, 1, 0]]
    assert b.labels.tolist() == [[6, 7, 8, 2], [3, 0, 0, 0], [4, 4, 1, 0]]
    assert b.input_ids.dtype == torch.long and b.attention_mask.dtype == torch.long
    assert b.action_mask.dtype == torch.float32


def test_collate_puts_every_tensor_on_the_device_in_fixed_dtypes():
    eps = [_ep([5, 6], [7, 8], finished=True), _ep([9], [3], finished=False)]
    # the meta device stands in for CUDA on a CPU machine: a tensor left behind stays on "cpu"
    b = collate(eps, eos_id=2, pad_id=0, device=torch.device("meta"))
    assert [t.device.type for t in (b.input_ids, b.attention_mask, b.action_mask, b.labels)] == ["meta"] * 4
    # the action mask is float32 even where a caller has changed torch's default float dtype
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        b = collate(eps, eos_id=2, pad_id=0, device="cpu")
    finally:
        torch.set_default_dtype(before)
    assert b.action_mask.dtype == torch.float32 and b.input_ids.dtype == torch.long


def test_scatter_then_gather_round_trips_per_action_values():
    eps = [_ep([5, 6], [7, 8], finished=True), _ep([9], [3], finished=False), _ep([1, 1], [], finished=False)]
    b = collate(eps, eos_id=2, pad_id=0, device="cpu")
    vals = [[0.5, -1.0, 2.0], [4.0], []]
    t = scatter_actions(vals, b)
    assert t.tolist() == [[0.0, 0.5, -1.0, 2.0], [4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    assert t.dtype == b.action_mask.dtype
    assert gather_actions(t, b) == vals
    with pytest.raises(ValueError, match=r"^episode 1: 2 values for 1 action tokens$"):
        scatter_actions([[0.5, -1.0, 2.0], [4.0, 5.0], []], b)


# ---- minibatch_schedule ------------------------------------------------------------------------
def test_minibatches_are_slices_of_one_permutation_per_epoch():
    sched = minibatch_schedule(10, 4, 2, seed=3)
    gen = torch.Generator().manual_seed(3)
    perms = [torch.randperm(10, generator=gen).tolist() for _ in range(2)]
    # 10 // 4 = 2 minibatches per epoch (the last partial one dropped), consecutive slices
    assert sched == [(0, perms[0][0:4]), (0, perms[0][4:8]), (1, perms[1][0:4]), (1, perms[1][4:8])]


def test_each_rank_trains_its_slice_of_the_global_minibatch():
    whole = minibatch_schedule(8, 4, 1, seed=11)
    ranks = [minibatch_schedule(8, 4, 1, seed=11, rank=r, world=2) for r in (0, 1)]
    for (e, glob), (e0, a), (e1, b) in zip(whole, ranks[0], ranks[1]):
        assert e == e0 == e1 == 0 and a == glob[:2] and b == glob[2:]


def test_schedule_seed_is_taken_modulo_two_to_the_63():
    # torch's generator refuses seeds >= 2**64 ("Overflow"): any int seed works, as its residue
    assert minibatch_schedule(6, 3, 1, seed=5 + 2**64) == minibatch_schedule(6, 3, 1, seed=5)
    assert minibatch_schedule(6, 3, 1, seed=5) != minibatch_schedule(6, 3, 1, seed=6)
    assert minibatch_schedule(3, 4, 2, seed=0) == []  # fewer episodes than one minibatch
