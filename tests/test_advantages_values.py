"""Values and error messages of the credit-assignment functions at their edges (spec §1.3–§1.5):
an empty response, a last step no token starts in, a group of one, one or two whitened tokens,
whitening across processes. Each expected value is computed by hand in the comment beside it."""

from __future__ import annotations

import pytest
import torch

from vineppo.advantages import (backfill_values, gae_advantages, group_advantages, masked_whiten,
                                token_advantages)


# ---- backfill_values ---------------------------------------------------------------------------
def test_backfill_walks_back_to_the_first_state_when_no_state_has_an_estimate():
    # V = R from every state: 1 + 0 = 1 at s_1, 0 + 1 = 1 at s_0, then the terminal 0
    assert backfill_values([None, None], [0.0, 1.0]) == [1.0, 1.0, 0.0]
    # rewards add up on the way back: V(s_1) = 2 + 0, V(s_0) = 3 + 2
    assert backfill_values([None, None], [3.0, 2.0]) == [5.0, 2.0, 0.0]


def test_backfill_errors_name_the_counts_and_the_values():
    with pytest.raises(ValueError, match=r"need one value per step: 1 values for 2 steps"):
        backfill_values([0.5], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"missing only after the last estimated state, got \[0\.5, None, 0\.2\]"):
        backfill_values([0.5, None, 0.2], [0.0, 0.0, 1.0])


# ---- token_advantages --------------------------------------------------------------------------
def test_eos_copies_the_last_token_not_the_last_step():
    # steps "ab" [0,2) and "\ncd" [2,5): tokens at 0 and 2 -> steps 0 and 1; EOS copies token 2's
    assert token_advantages([0, 2, 5], [0, 2], [1.0, -2.0], eos=True) == [1.0, -2.0, -2.0]
    # a last step [5,6) in which no token starts (token 4 spans it): EOS copies token 4 (step 1), not step 2
    assert token_advantages([0, 2, 5, 6], [0, 4], [1.0, -2.0, 7.0], eos=True) == [1.0, -2.0, -2.0]


def test_an_empty_response_with_eos_trains_the_eos_on_the_last_step():
    # no response token: the EOS alone takes the last step's advantage
    assert token_advantages([0, 0], [], [0.25], eos=True) == [0.25]
    assert token_advantages([0, 0, 0], [], [0.25, -0.5], eos=True) == [-0.5]
    assert token_advantages([0, 0, 0, 0], [], [0.25, -0.5, 3.0], eos=True) == [3.0]
    assert token_advantages([0, 0], [], [0.25], eos=False) == []


def test_token_advantages_error_names_both_counts():
    with pytest.raises(ValueError, match=r"^2 steps but 1 step advantages$"):
        token_advantages([0, 2, 5], [0], [1.0], eos=False)


# ---- gae_advantages ----------------------------------------------------------------------------
def test_gae_defaults_are_gamma_and_lambda_one():
    # γ = λ = 1 by default: A_t = R − V(s_t) = (1 − 0.2, 1 − 0.5, 1 − 0.7), returns all R = 1
    rewards, values, mask = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.2, 0.5, 0.7]]), torch.ones(1, 3)
    adv, ret = gae_advantages(rewards, values, mask)
    assert adv[0].tolist() == pytest.approx([0.8, 0.5, 0.3])
    assert ret[0].tolist() == pytest.approx([1.0, 1.0, 1.0])


# ---- group_advantages --------------------------------------------------------------------------
def test_a_group_of_one_gives_zero_under_grpo_and_dr_grpo():
    # r − mean = 0 for a single sample, whatever its std
    assert group_advantages([1.0, 0.0, 0.5], 1, "grpo") == [0.0, 0.0, 0.0]
    assert group_advantages([1.0, 0.0], 1, "dr_grpo") == [0.0, 0.0]


def test_group_advantages_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"group_size must be >= 1, got 0"):
        group_advantages([1.0], 0, "grpo")
    with pytest.raises(ValueError, match=r"^rloo needs at least 2 samples per question \(a leave-one-out baseline\)$"):
        group_advantages([1.0, 0.0], 1, "rloo")
    with pytest.raises(ValueError, match=r"3 rewards do not split into groups of 2"):
        group_advantages([1.0, 0.0, 1.0], 2, "grpo")
    with pytest.raises(ValueError, match=r"unknown group advantage method 'ppo'"):
        group_advantages([1.0, 0.0], 2, "ppo")


# ---- masked_whiten -----------------------------------------------------------------------------
def test_whitening_one_token_gives_its_own_mean_and_zero():
    # count 1: mean = 5, the unbiased variance divides by max(1 − 1, 1) = 1 -> 0; whitened 0
    w, st = masked_whiten(torch.tensor([5.0, 9.0]), torch.tensor([1.0, 0.0]))
    assert st == {"mean": 5.0, "var": 0.0, "count": 1}
    assert w.tolist() == [0.0, 0.0]


def test_whitening_two_tokens_divides_by_n_minus_one():
    # x = (1, 3): mean 2, Σ(x − mean)² = 2, unbiased var = 2 / (2 − 1) = 2
    w, st = masked_whiten(torch.tensor([1.0, 3.0]), torch.ones(2))
    assert st == {"mean": 2.0, "var": 2.0, "count": 2}
    assert w.tolist() == pytest.approx([-(0.5 ** 0.5), 0.5 ** 0.5])


def test_whitening_without_shifting_the_mean_adds_it_back():
    # x = (1, 3): (x − 2) / √2 + 2; the masked position stays 0
    w, _ = masked_whiten(torch.tensor([1.0, 3.0, 8.0]), torch.tensor([1.0, 1.0, 0.0]), shift_mean=False)
    assert w.tolist() == pytest.approx([2 - 0.5 ** 0.5, 2 + 0.5 ** 0.5, 0.0])


def test_whitened_values_keep_the_dtype_of_x_whatever_the_mask():
    w, _ = masked_whiten(torch.tensor([1.0, 3.0]), torch.ones(2, dtype=torch.float64))
    assert w.dtype == torch.float32
    w, _ = masked_whiten(torch.tensor([1.0, 3.0], dtype=torch.float64), torch.tensor([True, True]))
    assert w.dtype == torch.float64


class _OtherRank:
    """torch.distributed as seen by rank 0 of 2 whose other rank holds x = (3, 6): all_reduce adds
    that rank's sum and count, then its squared deviations around the global mean 3."""

    def __init__(self):
        self.calls = 0

    def all_reduce(self, t):
        self.calls += 1
        if self.calls == 1:
            t += torch.tensor([3.0 + 6.0, 2.0], dtype=t.dtype)
        else:
            t += (3.0 - 3.0) ** 2 + (6.0 - 3.0) ** 2


def test_whitening_statistics_are_global_only_when_asked(monkeypatch):
    other = _OtherRank()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", other.all_reduce)
    x, mask = torch.tensor([1.0, 2.0]), torch.ones(2)
    # this rank alone (the default, and distributed=False under an initialized group): mean 1.5, var 0.5
    for kwargs in ({}, {"distributed": False}):
        _, st = masked_whiten(x, mask, **kwargs)
        assert st == {"mean": 1.5, "var": 0.5, "count": 2}
    assert other.calls == 0
    # both ranks: (1, 2, 3, 6): mean 3, var (4 + 1 + 0 + 9) / 3 = 14 / 3
    w, st = masked_whiten(x, mask, distributed=True)
    assert other.calls == 2
    assert st["mean"] == 3.0 and st["var"] == pytest.approx(14 / 3) and st["count"] == 4
    assert w.tolist() == pytest.approx([(1 - 3) / (14 / 3) ** 0.5, (2 - 3) / (14 / 3) ** 0.5])
