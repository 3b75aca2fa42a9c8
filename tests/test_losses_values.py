"""The PPO objective at its edges (vineppo/losses.py): one or no token in a mean, each loss
aggregation hand-computed, the chunked log-softmax against the whole one (values and gradients),
the defaults of every clip range, and the statistics a step logs."""

from __future__ import annotations

import math

import pytest
import torch

from vineppo.losses import (aggregate_token_loss, k3_kl, kl_penalty_loss, logprobs_from_logits, masked_mean,
                            ppo_policy_loss, value_loss)


def test_masked_mean_of_one_token_and_of_none():
    assert float(masked_mean(torch.tensor([4.0, 9.0]), torch.tensor([1.0, 0.0]))) == 4.0
    assert float(masked_mean(torch.tensor([4.0, 9.0]), torch.tensor([0.0, 0.0]))) == 0.0
    assert float(masked_mean(torch.tensor([4.0, 9.0]), torch.tensor([1.0, 1.0]))) == 6.5


def test_each_aggregation_hand_computed():
    x = torch.tensor([[2.0, 4.0, 100.0], [6.0, 100.0, 100.0], [100.0, 100.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # token mean: (2 + 4 + 6) / 3 tokens; also the default
    assert float(aggregate_token_loss(x, mask, "token_mean")) == 4.0
    assert float(aggregate_token_loss(x, mask)) == 4.0
    # sequence means 3, 6 and 0 (an empty sequence counts as 0), then their mean
    assert float(aggregate_token_loss(x, mask, "seq_mean_token_mean")) == 3.0
    # sequence sums 6, 6 and 0 over the constant 4, then their mean
    assert float(aggregate_token_loss(x, mask, "seq_mean_token_sum_norm", norm_length=4)) == pytest.approx(1.0)


@pytest.mark.parametrize("norm_length", [None, 0, -4])
def test_sum_norm_needs_a_positive_length(norm_length):
    with pytest.raises(ValueError, match=rf"^seq_mean_token_sum_norm needs a positive norm_length, got "
                                         rf"{norm_length!r}$"):
        aggregate_token_loss(torch.ones(1, 2), torch.ones(1, 2), "seq_mean_token_sum_norm", norm_length)


def test_unknown_aggregation_names_the_known_ones():
    with pytest.raises(ValueError, match=r"^unknown loss aggregation 'sum'; expected one of \['token_mean', "
                                         r"'seq_mean_token_mean', 'seq_mean_token_sum_norm'\]$"):
        aggregate_token_loss(torch.ones(1, 2), torch.ones(1, 2), "sum")


def _whole(logits, labels, temperature):
    # the definition: log_softmax over the vocabulary of logits / T, read at the label
    return torch.log_softmax(logits.double() / temperature, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def test_chunked_logprobs_equal_the_whole_softmax_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (2, 7), generator=g)
    expect = _whole(logits, labels, 0.6)
    for chunk in (2, 3, 7, 100):
        assert torch.allclose(logprobs_from_logits(logits, labels, 0.6, chunk_size=chunk).double(), expect, atol=1e-6)
    # with gradients (each chunk checkpointed): the same values and the same gradient
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    w = torch.randn(2, 7, generator=g, dtype=torch.float64)
    (logprobs_from_logits(a, labels, 0.6, chunk_size=3).double() * w).sum().backward()
    (_whole(b, labels, 0.6) * w).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_logprobs_default_chunk_and_temperature():
    logits = torch.tensor([[[2.0, 0.0, -1.0]] * 300])
    labels = torch.zeros(1, 300, dtype=torch.long)
    lp = logprobs_from_logits(logits, labels)  # T = 1, chunks of 256 positions
    expect = 2.0 - math.log(math.exp(2.0) + 1.0 + math.exp(-1.0))
    assert lp.shape == (1, 300) and torch.allclose(lp, torch.full((1, 300), expect), atol=1e-6)


def test_ppo_clip_defaults_and_statistics():
    old = torch.zeros(1, 3)
    # ratios e^{0.5} (clipped to 1.2 for A = 1), 1.0 (inside), e^{-1} (A = −1: clipped to 0.8)
    logp = torch.tensor([[0.5, 0.0, -1.0]])
    adv = torch.tensor([[1.0, 2.0, -1.0]])
    loss, st = ppo_policy_loss(logp, old, adv, torch.ones(1, 3))  # cliprange 0.2, threshold 10
    # token 0: max(−e^{0.5}, −1.2) = −1.2; token 1: −2; token 2: max(e^{−1}, 0.8) = 0.8
    assert float(loss) == pytest.approx((-1.2 - 2.0 + 0.8) / 3, rel=1e-6)
    assert st["pg_loss"] == pytest.approx(float(loss))
    assert st["clip_frac"] == pytest.approx(2 / 3)  # token 1 is inside the range: not clipped
    assert st["ratio"] == pytest.approx((math.exp(0.5) + 1.0 + math.exp(-1.0)) / 3, rel=1e-6)
    assert st["approx_kl_old"] == pytest.approx(0.5 * (0.25 + 0.0 + 1.0) / 3, rel=1e-6)
    assert st["ratio_skipped"] == 0.0


def test_a_mean_ratio_at_the_threshold_is_not_skipped():
    # every ratio 1, threshold 1: skipped only above it
    loss, st = ppo_policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2),
                               ratio_threshold=1.0)
    assert st["ratio_skipped"] == 0.0 and float(loss) == -1.0
    assert st["clip_frac"] == 0.0


def test_ppo_loss_passes_the_aggregation_on():
    logp, old = torch.zeros(2, 2), torch.zeros(2, 2)
    adv = torch.tensor([[1.0, 3.0], [2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # ratio 1: pg = −A; sequence means −2 and −2
    loss, _ = ppo_policy_loss(logp, old, adv, mask, aggregation="seq_mean_token_mean")
    assert float(loss) == -2.0
    # sequence sums −4 and −2 over 8
    loss, _ = ppo_policy_loss(logp, old, adv, mask, aggregation="seq_mean_token_sum_norm", norm_length=8)
    assert float(loss) == pytest.approx((-4 / 8 - 2 / 8) / 2)


def test_k3_defaults_clamp_to_zero_and_ten():
    # r = ref − logp = −0.5: e^r − r − 1 ≈ 0.1065, between the default bounds
    kl = k3_kl(torch.tensor([[0.0, 0.0]]), torch.tensor([[-0.5, 40.0]]), torch.ones(1, 2))
    assert kl[0, 0].item() == pytest.approx(math.exp(-0.5) + 0.5 - 1.0, rel=1e-6)
    assert kl[0, 1].item() == 10.0
    lo = k3_kl(torch.tensor([[0.0]]), torch.tensor([[-0.5]]), torch.ones(1, 1), clamp_min=0.2)
    assert lo.item() == pytest.approx(0.2)


def test_kl_penalty_defaults_and_clamps_pass_through():
    logp, ref, mask = torch.zeros(1, 2), torch.tensor([[-0.5, 40.0]]), torch.ones(1, 2)
    per_seq = (math.exp(-0.5) + 0.5 - 1.0) + 10.0
    loss, kl = kl_penalty_loss(logp, ref, mask)
    assert kl == pytest.approx(per_seq, rel=1e-6) and float(loss) == pytest.approx(1e-4 * per_seq, rel=1e-6)
    loss, kl = kl_penalty_loss(logp, ref, mask, coef=1.0, clamp_min=0.5, clamp_max=3.0)
    assert kl == pytest.approx(0.5 + 3.0) and float(loss) == pytest.approx(3.5)


def test_value_loss_default_clip_and_clip_fraction():
    old = torch.tensor([[0.5, 0.5]])
    v = torch.tensor([[1.5, 0.6]])
    g = torch.tensor([[1.4, 1.0]])
    # default cliprange 0.2: token 0 clipped to 0.7: max(0.01, 0.49); token 1 inside: 0.16 both
    loss, st = value_loss(v, old, g, torch.ones(1, 2))
    assert float(loss) == pytest.approx(0.5 * (0.49 + 0.16) / 2)
    assert st["value_loss"] == pytest.approx(float(loss))
    assert st["value_clip_frac"] == 0.5  # token 1: equal losses are not clipping


def test_ppo_statistics_with_a_nonzero_old_logprob():
    # logp − old = 0.3 − 0.5 = −0.2 and 1.0 − 0.2 = 0.8: approx KL 0.5 · (0.04 + 0.64) / 2 = 0.17
    # (with logp + old it would be 0.5 · (0.64 + 1.44) / 2 = 0.52)
    old = torch.tensor([[0.5, 0.2]], dtype=torch.float64)
    logp = torch.tensor([[0.3, 1.0]], dtype=torch.float64)
    _, st = ppo_policy_loss(logp, old, torch.ones(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64))
    assert st["approx_kl_old"] == pytest.approx(0.17)
    assert st["ratio"] == pytest.approx((math.exp(-0.2) + math.exp(0.8)) / 2)


def test_the_default_ratio_threshold_is_ten():
    # every ratio 10.5: above the default threshold 10, the loss is zeroed and the step flagged
    logp = torch.full((1, 2), math.log(10.5), dtype=torch.float64)
    old, adv, mask = (torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64),
                      torch.ones(1, 2, dtype=torch.float64))
    loss, st = ppo_policy_loss(logp, old, adv, mask)
    assert st["ratio"] == pytest.approx(10.5) and st["ratio_skipped"] == 1.0 and float(loss) == 0.0
    # every ratio 9.5: below it, the clipped loss −A · 1.2 stays
    loss, st = ppo_policy_loss(torch.full((1, 2), math.log(9.5), dtype=torch.float64), old, adv, mask)
    assert st["ratio_skipped"] == 0.0 and float(loss) == pytest.approx(-1.2)


def test_value_loss_clips_a_value_that_fell_below_the_old_one():
    # V_old = 0, V = −1, G = −2: unclipped (−1 + 2)² = 1; clipped to −0.2: (−0.2 + 2)² = 3.24, the larger
    loss, st = value_loss(torch.tensor([[-1.0]]), torch.zeros(1, 1), torch.tensor([[-2.0]]), torch.ones(1, 1))
    assert float(loss) == pytest.approx(0.5 * 3.24)
    assert st["value_clip_frac"] == 1.0


def test_sum_norm_with_a_length_of_one_and_of_one_half():
    x, mask = torch.tensor([[2.0, 4.0], [6.0, 100.0]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # sequence sums 6 and 6: over 1, mean 6; over 0.5, mean 12
    assert float(aggregate_token_loss(x, mask, "seq_mean_token_sum_norm", norm_length=1)) == 6.0
    assert float(aggregate_token_loss(x, mask, "seq_mean_token_sum_norm", norm_length=0.5)) == 12.0


def _saved_for_backward_bytes(logits: torch.Tensor, labels: torch.Tensor, **kw) -> int:
    """Bytes autograd keeps for backward beyond the inputs' own storage (`saved_tensors_hooks` sees
    every tensor a forward saves outside a checkpoint; a checkpointed chunk saves only its inputs)."""
    kept: dict[int, int] = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = logprobs_from_logits(logits, labels, 0.6, **kw)
    out.sum().backward()
    inputs = {logits.untyped_storage().data_ptr(), labels.untyped_storage().data_ptr()}
    return sum(b for p, b in kept.items() if p not in inputs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_with_gradients_no_fp32_log_softmax_is_kept_for_backward(dtype):
    # the reason for the chunks: (B, T, V) fp32 log-softmax is ~8 GB at the paper's sizes. Chunked
    # with gradients, every chunk is recomputed in backward: autograd keeps nothing beyond the
    # logits; the whole-sequence pass keeps its fp32 log-softmax, B·T·V·4 bytes
    logits = torch.randn(2, 600, 50).to(dtype).requires_grad_()
    labels = torch.zeros(2, 600, dtype=torch.long)
    assert _saved_for_backward_bytes(logits, labels) == 0  # default chunks of 256 < T = 600
    assert _saved_for_backward_bytes(logits.detach().clone().requires_grad_(), labels,
                                     chunk_size=600) == 2 * 600 * 50 * 4


def _chunk_calls(monkeypatch) -> list[int]:
    """Record the width of every chunk handed to activation checkpointing."""
    import torch.utils.checkpoint as ckpt

    widths: list[int] = []
    real = ckpt.checkpoint

    def spy(fn, lg, *args, **kw):
        widths.append(lg.shape[1])
        return real(fn, lg, *args, **kw)

    monkeypatch.setattr(ckpt, "checkpoint", spy)
    return widths


@pytest.mark.parametrize("T,expect", [(256, []), (257, [256, 1]), (600, [256, 256, 88])])
def test_default_chunks_are_256_positions_cut_along_the_sequence(monkeypatch, T, expect):
    # chunks cut the sequence (dim 1) into 256 positions, whatever the vocabulary (here 3 < 256);
    # a sequence of exactly 256 is one plain pass, no checkpoint
    widths = _chunk_calls(monkeypatch)
    logits = torch.randn(1, T, 3, requires_grad=True)
    logprobs_from_logits(logits, torch.zeros(1, T, dtype=torch.long))
    assert widths == expect


def test_without_a_backward_no_chunk_is_checkpointed(monkeypatch):
    # checkpointing only pays when a backward recomputes: under no_grad, or on logits that need no
    # gradient, the chunks are computed plainly (the same values; no checkpoint machinery)
    widths = _chunk_calls(monkeypatch)
    logits = torch.randn(1, 300, 3)
    labels = torch.zeros(1, 300, dtype=torch.long)
    with torch.no_grad():
        a = logprobs_from_logits(logits.clone().requires_grad_(), labels)
    b = logprobs_from_logits(logits, labels)
    assert widths == [] and torch.equal(a, b)
