"""GRPO, Dr. GRPO and RLOO: group advantages, loss aggregation, the credit phase and their
per-algorithm defaults. Pure functions; no model."""

from __future__ import annotations

import math

import pytest
import torch

from vineppo.advantages import group_advantages
from vineppo.config import ConfigError, load_config, loss_aggregation_for, whiten_advantages_for
from vineppo.episodes import Episode
from vineppo.loop import accumulate_compute, assign_group_advantages
from vineppo.losses import aggregate_token_loss, ppo_policy_loss

REWARDS = [1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1]


def test_group_advantages_rloo_exact():
    assert group_advantages(REWARDS, 4, "rloo") == [2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0,
                                                    -1 / 3, -1 / 3, -1 / 3, 1]


def test_group_advantages_dr_grpo_exact():
    assert group_advantages(REWARDS, 4, "dr_grpo") == [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0,
                                                       -0.25, -0.25, -0.25, 0.75]


def test_group_advantages_grpo_exact():
    # group 1: mean 1/2, unbiased std sqrt(1/3); group 3: mean 1/4, unbiased std sqrt(1/4) = 1/2
    s1, s3 = math.sqrt(1 / 3), 0.5
    expected = [0.5 / (s1 + 1e-4), -0.5 / (s1 + 1e-4), -0.5 / (s1 + 1e-4), 0.5 / (s1 + 1e-4), 0, 0, 0, 0,
                -0.25 / (s3 + 1e-4), -0.25 / (s3 + 1e-4), -0.25 / (s3 + 1e-4), 0.75 / (s3 + 1e-4)]
    got = group_advantages(REWARDS, 4, "grpo")
    assert got == pytest.approx(expected, rel=1e-12, abs=0)
    assert got[4:8] == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("method", ["grpo", "dr_grpo", "rloo"])
def test_equal_rewards_give_zero(method):
    assert group_advantages([0.3] * 3 + [1.0] * 3, 3, method) == [0.0] * 6


def test_group_advantages_bad_input():
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages([1, 0, 1], 4, "grpo")
    with pytest.raises(ValueError, match="unknown"):
        group_advantages([1, 0], 2, "ppo")
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages([1, 0], 1, "rloo")


def test_aggregate_token_loss_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert float(aggregate_token_loss(x, mask, "token_mean")) == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert float(aggregate_token_loss(x, mask, "seq_mean_token_mean")) == pytest.approx((2 + 4) / 2)
    assert float(aggregate_token_loss(x, mask, "seq_mean_token_sum_norm", 10)) == pytest.approx((6 / 10 + 4 / 10) / 2)
    with pytest.raises(ValueError, match="norm_length"):
        aggregate_token_loss(x, mask, "seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate_token_loss(x, mask, "sum")


def test_policy_loss_aggregation_weighs_sequences():
    """At ratio 1 the clipped loss is −A per token: the aggregations differ only in weighting."""
    lp = torch.zeros(2, 3)
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    tok, _ = ppo_policy_loss(lp, lp, adv, mask)
    seq, _ = ppo_policy_loss(lp, lp, adv, mask, aggregation="seq_mean_token_mean")
    norm, _ = ppo_policy_loss(lp, lp, adv, mask, aggregation="seq_mean_token_sum_norm", norm_length=3)
    assert float(tok) == pytest.approx(-(3 - 1) / 4)
    assert float(seq) == pytest.approx(-(1 - 1) / 2)
    assert float(norm) == pytest.approx(-(3 / 3 - 1 / 3) / 2)


def _episode(q: int, j: int, reward: float, n_tokens: int, finished: bool) -> Episode:
    text = "a" * n_tokens
    return Episode(question_index=q, sample_index=j, prompt_ids=[1], response_ids=list(range(5, 5 + n_tokens)),
                   response_text=text, finished=finished, truncated=False, reward=reward,
                   step_boundaries=[0, n_tokens], token_starts=list(range(n_tokens)))


def test_assign_group_advantages_every_action_token_including_eos():
    eps = [_episode(7, 0, 1.0, 3, True), _episode(7, 1, 0.0, 2, False),
           _episode(9, 0, 0.0, 4, True), _episode(9, 1, 0.0, 1, True)]
    assign_group_advantages(eps, 2, "rloo", eos_id=2)
    assert eps[0].advantages == [1.0] * 4          # 3 tokens + EOS
    assert eps[1].advantages == [-1.0] * 2         # unfinished: no EOS
    assert eps[2].advantages == [0.0] * 5 and eps[3].advantages == [0.0] * 2
    assert len(eps[0].advantages) == len(eps[0].action_ids(2))


def test_assign_group_advantages_rejects_mixed_groups():
    eps = [_episode(1, 0, 1.0, 2, True), _episode(2, 0, 0.0, 2, True)]
    with pytest.raises(ValueError, match="samples of one question"):
        assign_group_advantages(eps, 2, "grpo", eos_id=2)


@pytest.mark.parametrize("algorithm,aggregation,whiten", [
    ("vineppo", "token_mean", True), ("ppo", "token_mean", True), ("grpo", "seq_mean_token_mean", False),
    ("dr_grpo", "seq_mean_token_sum_norm", False), ("rloo", "seq_mean_token_sum_norm", False)])
def test_per_algorithm_defaults(algorithm, aggregation, whiten):
    cfg = load_config(None, ["model.name_or_path=x", f"algorithm={algorithm}"])
    assert loss_aggregation_for(cfg) == aggregation
    assert whiten_advantages_for(cfg) is whiten
    cfg = load_config(None, ["model.name_or_path=x", f"algorithm={algorithm}", "ppo.loss_aggregation=token_mean",
                             "ppo.whiten_advantages=true"])
    assert loss_aggregation_for(cfg) == "token_mean" and whiten_advantages_for(cfg) is True


def test_group_methods_need_two_samples():
    with pytest.raises(ConfigError, match="samples_per_question"):
        load_config(None, ["model.name_or_path=x", "algorithm=grpo", "episodes.samples_per_question=1"])


def test_accumulate_compute_counts_episodes_mc_and_training():
    first = accumulate_compute({"generate/tokens": 100, "mc/tokens": 900, "train/tokens": 200, "seconds": 2.5}, {})
    assert first == {"compute/generated_tokens": 1000.0, "compute/trained_tokens": 200.0,
                     "compute/wall_clock_seconds": 2.5}
    second = accumulate_compute({"generate/tokens": 50, "train/tokens": 100, "seconds": 1.0}, first)
    assert second == {"compute/generated_tokens": 1050.0, "compute/trained_tokens": 300.0,
                      "compute/wall_clock_seconds": 3.5}


def test_critic_fit_metrics_by_hand():
    from vineppo.trainer import critic_fit_metrics

    # returns (1, 1, 0, 0): var 0.25; values (1, 0, 0, 0): residual (0, 1, 0, 0), var 0.1875
    m = critic_fit_metrics([[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]])
    assert m["critic/explained_variance"] == pytest.approx(1 - 0.1875 / 0.25)
    assert m["critic/value_mae"] == pytest.approx(0.25)
    assert critic_fit_metrics([[0.5]], [[0.5]]) == {"critic/value_mae": 0.0}  # constant returns: no EV
