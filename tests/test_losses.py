"""Hand-computed checks of the PPO objective (spec §1.4, §1.5)."""

import math

import pytest
import torch

from vineppo.losses import (k3_kl, kl_penalty_loss, logprobs_from_logits, masked_mean, ppo_policy_loss,
                            value_loss)


def test_logprobs_use_temperature():
    logits = torch.tensor([[[2.0, 0.0, -1.0]]])
    lp = logprobs_from_logits(logits, torch.tensor([[0]]), temperature=0.5)
    z = [4.0, 0.0, -2.0]
    expect = 4.0 - math.log(sum(math.exp(v) for v in z))
    assert float(lp) == pytest.approx(expect)


def test_ppo_clip_hand_computed():
    old = torch.zeros(1, 4)
    # ratios e^{0.5}≈1.6487, e^{-0.5}≈0.6065, 1.1, 1.0 (masked out)
    logp = torch.tensor([[0.5, -0.5, math.log(1.1), 3.0]])
    adv = torch.tensor([[1.0, 1.0, -2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, st = ppo_policy_loss(logp, old, adv, mask, cliprange=0.2)
    r = [math.exp(0.5), math.exp(-0.5), 1.1]
    # token 0: A>0, ratio>1.2 → clipped: -1.2; token 1: A>0 ratio<0.8: max(-0.6065, -0.8) = -0.6065
    # token 2: A<0 ratio 1.1 inside: 2.2
    expect = (-1.2 + -r[1] + 2.2) / 3
    assert float(loss) == pytest.approx(expect, rel=1e-5)
    assert st["clip_frac"] == pytest.approx(1 / 3)
    assert st["ratio"] == pytest.approx(sum(r) / 3, rel=1e-5)
    assert st["ratio_skipped"] == 0.0


def test_ratio_threshold_zeroes_the_batch():
    old = torch.zeros(1, 2)
    logp = torch.tensor([[5.0, 5.0]])  # ratio e^5 ≈ 148 > 10
    loss, st = ppo_policy_loss(logp.requires_grad_(), old, torch.ones(1, 2), torch.ones(1, 2))
    assert float(loss) == 0.0 and st["ratio_skipped"] == 1.0
    loss.backward()
    assert logp.grad.abs().sum() == 0


def test_k3_kl_clamp_and_sequence_sum_mean():
    logp = torch.tensor([[-1.0, -2.0, -1.0], [-1.0, -1.0, -30.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 1]])
    per_tok = k3_kl(logp, ref, mask)
    f = lambda r: math.exp(r) - r - 1
    assert per_tok[0].tolist() == pytest.approx([f(-0.5), f(1.0), 0.0])
    assert float(per_tok[1, 2]) == 10.0  # exp(29) clamped to 10
    loss, kl = kl_penalty_loss(logp, ref, mask, coef=1e-4)
    seq = [f(-0.5) + f(1.0), 10.0]
    assert kl == pytest.approx(sum(seq) / 2)
    assert float(loss) == pytest.approx(1e-4 * sum(seq) / 2)


def test_value_loss_clipping():
    old = torch.tensor([[0.5, 0.5]])
    v = torch.tensor([[1.0, 0.6]])
    g = torch.tensor([[0.0, 1.0]])
    mask = torch.ones(1, 2)
    loss, st = value_loss(v, old, g, mask, cliprange_value=0.2)
    # token 0: unclipped (1-0)^2=1, clipped 0.7^2=0.49 → 1; token 1: (0.6-1)^2=0.16, clipped same 0.16
    assert float(loss) == pytest.approx(0.5 * (1.0 + 0.16) / 2)
    v2 = torch.tensor([[0.0, 0.6]])
    g2 = torch.tensor([[1.0, 1.0]])
    # token 0: unclipped 1, clipped to 0.3: 0.49 → max 1
    loss2, _ = value_loss(v2, old, g2, mask, 0.2)
    assert float(loss2) == pytest.approx(0.5 * (1.0 + 0.16) / 2)
    v3 = torch.tensor([[0.9, 0.6]])
    g3 = torch.tensor([[0.8, 1.0]])
    # token 0: unclipped 0.01, clipped 0.7 → 0.01: max 0.01
    loss3, st3 = value_loss(v3, old, g3, mask, 0.2)
    assert float(loss3) == pytest.approx(0.5 * (0.01 + 0.16) / 2)
    v4 = torch.tensor([[1.5, 0.6]])
    g4 = torch.tensor([[1.4, 1.0]])
    # token 0: unclipped 0.01, clipped 0.7-1.4 → 0.49: max 0.49 (clipping bites)
    loss4, st4 = value_loss(v4, old, g4, mask, 0.2)
    assert float(loss4) == pytest.approx(0.5 * (0.49 + 0.16) / 2)
    assert st4["value_clip_frac"] == pytest.approx(0.5)


def test_masked_mean():
    assert float(masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1.0, 1.0, 0.0]))) == 2.0


def test_kl_masked_positions_get_exactly_zero_gradient():
    """A masked position with logp < −88.7 made `exp(ref − logp)` overflow; `0 · inf` in
    the backward pass put NaN into the gradient. The mask is applied before the exponential now."""
    logp = torch.tensor([[-100.0, -1.0, -2.0, -300.0]], requires_grad=True)
    ref = torch.zeros(1, 4)
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    loss, kl = kl_penalty_loss(logp, ref, mask)
    loss.backward()
    assert math.isfinite(float(loss)) and math.isfinite(kl)
    g = logp.grad[0]
    assert torch.isfinite(g).all()
    assert g[0].item() == 0.0 and g[3].item() == 0.0
    # the unmasked positions keep the k3 gradient: d/dlogp (e^r − r − 1), r = −logp → −(e^r − 1)
    f = lambda r: math.exp(r) - r - 1
    assert kl == pytest.approx(f(1.0) + f(2.0))
    assert g[1].item() == pytest.approx(-1e-4 * (math.e - 1.0), rel=1e-5)
    assert g[2].item() == pytest.approx(-1e-4 * (math.exp(2.0) - 1.0), rel=1e-5)


def test_policy_and_value_losses_ignore_masked_infinities():
    """The same pattern in the other losses: a masked −inf / overflowing log-prob never produces NaN."""
    logp = torch.tensor([[-float("inf"), -1.0, 200.0]], requires_grad=True)
    old = torch.tensor([[0.0, -1.2, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 0.0]])
    loss, st = ppo_policy_loss(logp, old, torch.tensor([[3.0, 1.0, -2.0]]), mask)
    loss.backward()
    assert math.isfinite(float(loss)) and st["ratio"] == pytest.approx(math.exp(0.2), rel=1e-6)
    assert torch.isfinite(logp.grad).all() and logp.grad[0, 0] == 0 and logp.grad[0, 2] == 0
    v = torch.tensor([[float("nan"), 0.5]], requires_grad=True)
    vl, _ = value_loss(v, torch.zeros(1, 2), torch.ones(1, 2), torch.tensor([[0.0, 1.0]]))
    vl.backward()
    # only position 1 counts: V = 0.5, V_old = 0 → clipped 0.2; max((0.5−1)², (0.2−1)²) = 0.64
    assert float(vl) == pytest.approx(0.5 * 0.64, rel=1e-6)
    assert torch.isfinite(v.grad).all() and v.grad[0, 0] == 0


def test_ratio_skip_zeroes_the_whole_actor_loss_kl_included():
    from vineppo.losses import actor_loss

    logp = torch.tensor([[5.0, 5.0]], requires_grad=True)  # mean ratio e^5 > 10
    old, ref, mask = torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2)
    pg, st = ppo_policy_loss(logp, old, torch.ones(1, 2), mask)
    kl, _ = kl_penalty_loss(logp, ref, mask, coef=0.1)
    assert st["ratio_skipped"] == 1.0 and float(kl) > 0
    loss = actor_loss(pg, kl, bool(st["ratio_skipped"]))
    loss.backward()
    assert float(loss) == 0.0 and logp.grad.abs().sum() == 0
    # not skipped: the KL term is there
    logp2 = torch.tensor([[0.1, 0.1]], requires_grad=True)
    pg2, st2 = ppo_policy_loss(logp2, old, torch.ones(1, 2), mask)
    kl2, _ = kl_penalty_loss(logp2, ref, mask, coef=0.1)
    assert float(actor_loss(pg2, kl2, bool(st2["ratio_skipped"]))) == pytest.approx(float(pg2) + float(kl2))


def test_log_warmup_is_deepspeeds_default_shape():
    from vineppo.trainer import lr_lambda

    # paper: 1000 iterations × 16 steps, warm-up ceil(0.03 × 16000) = 480 steps
    f = lr_lambda(16000, 0.03, "linear", "log")
    assert f(0) == 0.0
    assert f(15) == pytest.approx(math.log(16) / math.log(480))  # the 16th step of iteration 1: ~45 %
    assert 0.44 < f(15) < 0.46
    assert f(479) == pytest.approx(math.log(480) / math.log(480))
    assert f(480) == pytest.approx(1.0)
    assert f(8240) == pytest.approx((16000 - 8240) / (16000 - 480))
    assert f(16000) == 0.0
    lin = lr_lambda(16000, 0.03, "linear", "linear")
    assert lin(15) == pytest.approx(16 / 480)  # ~3 %
    # a 1-step warm-up (tiny runs) lasts 2 steps under the log shape, as in DeepSpeed
    g = lr_lambda(20, 0.03, "constant", "log")
    assert [g(0), g(1), g(2)] == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        lr_lambda(10, 0.1, "linear", "cosine")


def test_paper_configs_use_the_log_warmup():
    from pathlib import Path

    from vineppo.config import OptimConfig, load_config

    assert OptimConfig().warmup_shape == "log"
    for p in sorted((Path(__file__).resolve().parents[1] / "configs" / "paper").glob("*.yaml")):
        assert load_config(p).optim.warmup_shape == "log", p
