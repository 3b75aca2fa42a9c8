"""Hand-computed checks of the credit-assignment math (spec §1.3, §1.4, §1.5)."""

import math

import pytest
import torch

from vineppo.advantages import (backfill_values, gae_advantages, masked_whiten, token_advantages,
                                vine_outcome_advantages, vine_step_advantages)


def test_vine_step_advantages_hand_computed():
    # 3 steps, V̂ = (0.5, 0.25, 1.0), R = 1: A = (0.25-0.5, 1.0-0.25, 1+0-1.0)
    assert vine_step_advantages([0.5, 0.25, 1.0], [0, 0, 1]) == pytest.approx([-0.25, 0.75, 0.0])
    # wrong answer: last step gets 0 - V(s_2)
    assert vine_step_advantages([0.5, 0.25, 1 / 3], [0, 0, 0]) == pytest.approx([-0.25, 1 / 3 - 0.25, -1 / 3])


def test_single_step_response_is_r_minus_v0():
    assert vine_step_advantages([0.375], [1.0]) == pytest.approx([0.625])


def test_cap_backfill_equals_R_and_zero_advantages():
    # cap of 2 states on a 5-step response: V(s2..s4) back-filled to R
    vals = [0.5, 0.75, None, None, None]
    assert backfill_values(vals, [0, 0, 0, 0, 1]) == pytest.approx([0.5, 0.75, 1, 1, 1, 0])
    adv = vine_step_advantages(vals, [0, 0, 0, 0, 1])
    # boundary step gets R - V̂(s_m); the rest 0
    assert adv == pytest.approx([0.25, 0.25, 0, 0, 0])
    adv0 = vine_step_advantages(vals, [0, 0, 0, 0, 0])
    assert adv0 == pytest.approx([0.25, -0.75, 0, 0, 0])


def test_outcome_ablation_puts_r_minus_v0_on_every_step():
    # mc.credit: outcome reads only V̂(s_0): R − V̂(s_0) on every step, whatever the later values
    assert vine_outcome_advantages([0.25, None, None], [0, 0, 1]) == [0.75, 0.75, 0.75]
    assert vine_outcome_advantages([0.625, 0.9], [0.0, 0.0]) == [-0.625, -0.625]
    assert vine_outcome_advantages([0.5, 0.0, 0.0], [0, 0.5, 0.25]) == [0.25, 0.25, 0.25]  # R = the sum
    with pytest.raises(ValueError, match="^the outcome ablation needs V̂\\(s_0\\), the prompt's MC value$"):
        vine_outcome_advantages([None, 0.5], [0, 1])
    with pytest.raises(ValueError, match="2 values, 3 steps"):
        vine_outcome_advantages([0.5, 0.5], [0, 0, 1])
    with pytest.raises(ValueError, match="at least one step"):
        vine_outcome_advantages([], [])


def test_assign_vine_advantages_by_credit_mode():
    from vineppo.episodes import Episode
    from vineppo.loop import assign_vine_advantages

    def episode():  # "ab\ncd": steps [0, 2) and [2, 5), tokens at 0, 2, 3; finished: EOS appended
        return Episode(question_index=0, sample_index=0, prompt_ids=[1], response_ids=[5, 6, 7],
                       response_text="ab\ncd", finished=True, truncated=False, reward=1.0,
                       step_boundaries=[0, 2, 5], token_starts=[0, 2, 3], step_values=[0.25, 0.5])

    step, outcome = episode(), episode()
    assign_vine_advantages([step])
    assign_vine_advantages([outcome], "outcome")
    assert step.step_advantages == [0.25, 0.5] and step.advantages == [0.25, 0.5, 0.5, 0.5]
    assert outcome.step_advantages == [0.75, 0.75] and outcome.advantages == [0.75] * 4


def test_missing_value_in_the_middle_is_an_error():
    with pytest.raises(ValueError):
        vine_step_advantages([0.5, None, 0.2], [0, 0, 1])


def test_token_advantages_first_character_rule_and_eos():
    # response "ab\ncd" split into steps [0,2) "ab" and [2,5) "\ncd"
    bounds = [0, 2, 5]
    # tokens: "a"(0) "b\n"(1) -- starts in step 0 although it contains the newline; "\nc"? no:
    # tokens "a" @0, "b\nc" @1 belongs to step 0 (first char 'b'), "d" @4 -> step 1
    assert token_advantages(bounds, [0, 1, 4], [1.0, -2.0], eos=False) == [1.0, 1.0, -2.0]
    # a newline token opening step 1 belongs to step 1
    assert token_advantages(bounds, [0, 1, 2, 3], [1.0, -2.0], eos=True) == [1.0, 1.0, -2.0, -2.0, -2.0]


def test_token_advantages_with_empty_steps_and_zero_width_tokens():
    bounds = [0, 3, 3, 6]  # middle step empty
    assert token_advantages(bounds, [0, 3, 5, 6], [1.0, 2.0, 3.0], eos=False) == [1.0, 3.0, 3.0, 3.0]
    with pytest.raises(ValueError):
        token_advantages(bounds, [0], [1.0], eos=False)


def test_gae_gamma_lambda_one_equals_R_minus_V():
    values = torch.tensor([[0.2, 0.5, 0.7, 0.0], [0.1, 0.9, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0]])
    rewards = torch.zeros(2, 4)
    rewards[0, 2] = 1.0  # score on the last action token
    rewards[1, 1] = 0.0
    adv, ret = gae_advantages(rewards, values, mask, 1.0, 1.0)
    assert adv[0, :3].tolist() == pytest.approx([0.8, 0.5, 0.3])
    assert adv[1, :2].tolist() == pytest.approx([-0.1, -0.9])
    assert adv[0, 3] == 0 and adv[1, 2:].abs().sum() == 0
    assert ret[0, :3].tolist() == pytest.approx([1, 1, 1])


def test_gae_general_gamma_lambda():
    values = torch.tensor([[0.5, 0.4]])
    rewards = torch.tensor([[0.0, 1.0]])
    mask = torch.ones(1, 2)
    adv, _ = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.5)
    d1 = 1.0 - 0.4
    d0 = 0 + 0.9 * 0.4 - 0.5
    assert adv[0].tolist() == pytest.approx([d0 + 0.9 * 0.5 * d1, d1])


def test_masked_whiten_unbiased_and_masked():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0]])
    w, st = masked_whiten(x, mask)
    vals = [1.0, 2.0, 3.0, 4.0]
    mean = sum(vals) / 4
    var = sum((v - mean) ** 2 for v in vals) / 3
    assert st["mean"] == pytest.approx(mean) and st["var"] == pytest.approx(var) and st["count"] == 4
    expect = [(v - mean) / math.sqrt(var + 1e-8) for v in vals]
    assert [w[0, 0], w[0, 1], w[0, 2], w[1, 0]] == pytest.approx(expect, rel=1e-5)
    assert w[1, 1] == 0 and w[1, 2] == 0
