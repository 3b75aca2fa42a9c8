"""The PPO objective shared by PPO and VinePPO (spec §1.4, §1.5). Pure tensor functions."""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is set. Masked positions are selected away
    (`torch.where`), not multiplied by 0, so an inf/NaN there reaches neither value nor gradient."""
    return torch.where(mask > 0, x, torch.zeros_like(x)).sum() / mask.sum().clamp(min=1)


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`x` where `mask` is set, 0 elsewhere — applied *before* any exp/log so that a masked
    position's value (e.g. a prompt log-prob of −100) never enters a non-linearity: its gradient is
    exactly 0 instead of `0 · inf = NaN` (the official code masks log-probs first too)."""
    return torch.where(mask > 0, x, torch.zeros_like(x))


#: how a per-token loss becomes one number (`ppo.loss_aggregation`)
LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def aggregate_token_loss(x: torch.Tensor, mask: torch.Tensor, aggregation: str = "token_mean",
                         norm_length: float | None = None) -> torch.Tensor:
    """Reduce a per-token loss `x` (B, T) over the tokens where `mask` is 1.

    - `token_mean`: mean over every token of the batch (the official VinePPO/PPO code): long
      responses weigh more.
    - `seq_mean_token_mean`: mean over each sequence's tokens, then over sequences (GRPO,
      DeepSeekMath eq. 3): every response weighs the same.
    - `seq_mean_token_sum_norm`: sum over each sequence's tokens divided by the constant
      `norm_length` (the generation budget), then mean over sequences (Dr. GRPO): no length bias;
      up to that constant, the sequence-level REINFORCE gradient of RLOO.
    """
    if aggregation == "token_mean":
        return masked_mean(x, mask)
    per_seq_sum = _masked(x, mask).sum(dim=-1)
    if aggregation == "seq_mean_token_mean":
        return (per_seq_sum / mask.sum(dim=-1).clamp(min=1)).mean()
    if aggregation == "seq_mean_token_sum_norm":
        if not norm_length or norm_length <= 0:
            raise ValueError(f"seq_mean_token_sum_norm needs a positive norm_length, got {norm_length!r}")
        return (per_seq_sum / float(norm_length)).mean()
    raise ValueError(f"unknown loss aggregation {aggregation!r}; expected one of {list(LOSS_AGGREGATIONS)}")


def logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                         chunk_size: int = 256) -> torch.Tensor:
    """log π(label) from `logits.float() / temperature` (the sampling temperature, 0.6 in the paper;
    top-p truncation is not modelled). logits: (B, T, V), labels: (B, T) → (B, T).

    Computed over chunks of `chunk_size` positions, so no full-vocabulary fp32 copy of the logits
    exists at once (8 × 2499 × 102400 floats would be ~8 GB); with gradients each chunk is
    recomputed in backward (activation checkpointing) instead of keeping its fp32 copy."""
    if logits.shape[1] <= chunk_size:
        return _label_logprobs(logits, labels, temperature)
    from torch.utils.checkpoint import checkpoint

    grad = torch.is_grad_enabled() and logits.requires_grad
    out = []
    for s in range(0, logits.shape[1], chunk_size):
        lg, lb = logits[:, s: s + chunk_size], labels[:, s: s + chunk_size]
        out.append(checkpoint(_label_logprobs, lg, lb, temperature, use_reentrant=False) if grad
                   else _label_logprobs(lg, lb, temperature))
    return torch.cat(out, dim=1)


def _label_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return torch.gather(logp, -1, labels.unsqueeze(-1)).squeeze(-1)


def ppo_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    cliprange: float = 0.2, ratio_threshold: float = 10.0, *,
                    aggregation: str = "token_mean", norm_length: float | None = None) -> tuple[torch.Tensor, dict]:
    """PPO-clip, aggregated over the micro-batch's response tokens by `aggregate_token_loss`
    (token-mean by default, as in the official code).

    ratio = exp((logp − old) · mask); pg = max(−A·ratio, −A·clip(ratio, 1−ε, 1+ε)). When the
    micro-batch's mean ratio exceeds `ratio_threshold` its policy loss is multiplied by 0 and
    `stats["ratio_skipped"]` is 1: the caller zeroes the rest of the actor loss too (`actor_loss`).
    """
    ratio = torch.exp(_masked(logp - old_logp, mask))
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg = torch.max(pg1, pg2)
    loss = aggregate_token_loss(pg, mask, aggregation, norm_length)
    mean_ratio = masked_mean(ratio, mask).detach()
    skipped = bool(mean_ratio > ratio_threshold)
    if skipped:
        loss = loss * 0.0
    stats = {
        "pg_loss": float(loss.detach()),
        "clip_frac": float(masked_mean((pg2 > pg1).float(), mask)),
        "ratio": float(mean_ratio),
        "approx_kl_old": float(masked_mean(0.5 * (logp - old_logp) ** 2, mask).detach()),
        "ratio_skipped": float(skipped),
    }
    return loss, stats


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
          clamp_min: float = 0.0, clamp_max: float = 10.0) -> torch.Tensor:
    """Per-token k3 ("control variate") KL estimate to the reference, `exp(r) − r − 1` with
    r = ref_logp − logp, clamped to [clamp_min, clamp_max] and zero outside the mask. r is masked
    before the exponential: a masked position contributes 0 and gets an exactly-zero gradient."""
    r = _masked(ref_logp - logp, mask)
    kl = torch.exp(r) - r - 1.0
    return _masked(torch.clamp(kl, clamp_min, clamp_max), mask)


def kl_penalty_loss(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, coef: float = 1e-4,
                    clamp_min: float = 0.0, clamp_max: float = 10.0) -> tuple[torch.Tensor, float]:
    """`coef · mean over sequences of (sum over tokens of k3)`: in the loss, not the reward.
    Note the sequence-sum, whereas the policy loss is a token-mean (spec §1.4). Returns (loss, kl)."""
    per_seq = k3_kl(logp, ref_logp, mask, clamp_min, clamp_max).sum(dim=-1)
    kl = per_seq.mean()
    return coef * kl, float(kl.detach())


def actor_loss(pg_loss: torch.Tensor, kl_loss: torch.Tensor, ratio_skipped: bool) -> torch.Tensor:
    """The actor's loss of one micro-batch: PPO-clip + KL penalty, or 0 (same graph, zero gradient)
    when the micro-batch's mean ratio exceeded `ratio_threshold` — the official code skips the
    *whole* actor loss then, the KL term included (spec §1.4)."""
    loss = pg_loss + kl_loss
    return loss * 0.0 if ratio_skipped else loss


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float = 0.2) -> tuple[torch.Tensor, dict]:
    """Clipped critic loss `0.5 · masked_mean(max((V − G)², (clip(V, V_old ± c) − G)²))` (spec §1.5)."""
    values, old_values, returns = (_masked(t, mask) for t in (values, old_values, returns))
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    l1 = (values - returns) ** 2
    l2 = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(l1, l2), mask)
    return loss, {"value_loss": float(loss.detach()),
                  "value_clip_frac": float(masked_mean((l2 > l1).float(), mask))}
