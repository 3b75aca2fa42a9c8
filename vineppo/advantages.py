"""Credit assignment: VinePPO step advantages, step→token mapping, GAE (PPO) and whitening.

Pure functions over lists/tensors; the only distributed piece is the optional all-reduce in
`masked_whiten`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from fractions import Fraction
from typing import Sequence

import torch


def backfill_values(values: Sequence[float | None], rewards: Sequence[float]) -> list[float]:
    """V̂(s_0..s_n) with the terminal V(s_n) = 0 appended and states beyond the MC cap back-filled.

    Spec §1.3: states without an estimate form a tail (beyond `max_states_per_response`); walking
    back from the end, `V[i] = r_i + V[i+1]`, which equals R, so their advantages are 0 and the
    boundary step gets `R − V̂(s_m)`.
    """
    n = len(rewards)
    if len(values) != n:
        raise ValueError(f"need one value per step: {len(values)} values for {n} steps")
    out: list[float | None] = list(values) + [0.0]
    i = n - 1
    while i >= 0 and out[i] is None:
        out[i] = float(rewards[i]) + out[i + 1]  # type: ignore[operator]
        i -= 1
    if any(v is None for v in out[: i + 1]):
        raise ValueError(f"values may be missing only after the last estimated state, got {list(values)}")
    return [float(v) for v in out]  # type: ignore[arg-type]


def vine_step_advantages(values: Sequence[float | None], rewards: Sequence[float]) -> list[float]:
    """VinePPO step advantages `A_i = r_i + V(s_{i+1}) − V(s_i)` (γ = 1, terminal V = 0).

    values: V̂(s_0..s_{n-1}), one per step, None where not estimated (back-filled, see
    `backfill_values`). rewards: one per step, (0, …, 0, R).
    """
    v = backfill_values(values, rewards)
    return [float(rewards[i]) + v[i + 1] - v[i] for i in range(len(rewards))]


def vine_outcome_advantages(values: Sequence[float | None], rewards: Sequence[float]) -> list[float]:
    """The `mc.credit: outcome` ablation of VinePPO: every step gets `R − V̂(s_0)` (R the sum of the
    rewards), the prompt's MC value as a baseline and no credit assignment between steps; only
    `values[0]` is read."""
    if len(values) != len(rewards) or not rewards:
        raise ValueError(f"need one value per step and at least one step: {len(values)} values, {len(rewards)} steps")
    if values[0] is None:
        raise ValueError("the outcome ablation needs V̂(s_0), the prompt's MC value")
    advantage = float(sum(rewards)) - float(values[0])
    return [advantage] * len(rewards)


def step_index_of_char(step_boundaries: Sequence[int], char: int) -> int:
    """The step containing character `char` (the last step for a character at or past the end)."""
    n_steps = len(step_boundaries) - 1
    return min(max(bisect_right(step_boundaries, char) - 1, 0), n_steps - 1)


def token_advantages(step_boundaries: Sequence[int], token_starts: Sequence[int],
                     step_advantages: Sequence[float], eos: bool) -> list[float]:
    """Per-token advantages: each response token takes the advantage of the step containing its
    first character (so a newline token opening a step belongs to that step); with `eos=True` one
    more entry copies the last (the EOS token appended to finished responses). Spec §1.3.
    """
    if len(step_boundaries) - 1 != len(step_advantages):
        raise ValueError(f"{len(step_boundaries) - 1} steps but {len(step_advantages)} step advantages")
    out = [float(step_advantages[step_index_of_char(step_boundaries, c)]) for c in token_starts]
    if eos:
        out.append(out[-1] if out else float(step_advantages[-1]))
    return out


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float = 1.0, lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-level GAE for the PPO baseline. Returns (advantages, returns = advantages + values).

    rewards, values, mask: (batch, T) over action tokens; the value after the last action is 0.
    With γ = λ = 1 and the score on the last token, A_t = R − V(s_t) (spec §1.5).
    """
    rewards = rewards * mask
    values = values * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        last = last * mask[:, t]
        adv[:, t] = last
    return adv, adv + values


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, distributed: bool = False,
                  shift_mean: bool = True, eps: float = 1e-8) -> tuple[torch.Tensor, dict]:
    """Token-level whitening with unbiased variance; statistics over every masked token of `x`,
    all-reduced across processes when `distributed` (spec §1.4). Returns (whitened, stats)."""
    m = mask.to(x.dtype)
    stats_t = torch.stack([(x * m).sum(), m.sum()]).double()
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(stats_t)
    total, count = stats_t[0], stats_t[1]
    mean = total / count.clamp(min=1)
    sq = (((x.double() - mean) ** 2) * m.double()).sum()
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(sq)
    var = sq / (count - 1).clamp(min=1)
    whitened = (x - mean.to(x.dtype)) * torch.rsqrt(var.to(x.dtype) + eps)
    if not shift_mean:
        whitened = whitened + mean.to(x.dtype)
    return whitened * m, {"mean": float(mean), "var": float(var), "count": int(count)}


#: the critic-free algorithms that take one advantage per sampled response from its group
GROUP_METHODS = ("grpo", "dr_grpo", "rloo")


def group_advantages(rewards: Sequence[float], group_size: int, method: str) -> list[float]:
    """One advantage per response from the rewards of its group (the samples of one question).

    `rewards` holds consecutive groups of `group_size` samples of one question each.
    - `grpo` (DeepSeekMath): `(r − mean) / (std + 1e-4)` with the unbiased (n − 1) std of the
      group, as TRL's GRPOTrainer computes it by default;
    - `dr_grpo` (Dr. GRPO, Liu et al. 2025): `r − mean`, no std division;
    - `rloo` (Ahmadian et al. 2024): `r −` the mean of the *other* samples of the group, i.e.
      `n/(n−1) · (r − mean)`.
    A group of equal rewards gives zeros under every method.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    if method not in GROUP_METHODS:
        raise ValueError(f"unknown group advantage method {method!r}; expected one of {list(GROUP_METHODS)}")
    if method == "rloo" and group_size < 2:
        raise ValueError("rloo needs at least 2 samples per question (a leave-one-out baseline)")
    out: list[float] = []
    for start in range(0, len(rewards), group_size):
        # exact rational arithmetic (Fraction of a float is exact), rounded once at the end, so
        # e.g. rloo's 2/3 is the float nearest 2/3 whatever the order of operations
        g = [Fraction(float(r)) for r in rewards[start: start + group_size]]
        n = len(g)
        mean = sum(g) / n
        if method == "grpo":
            var = sum((r - mean) ** 2 for r in g) / (n - 1) if n > 1 else Fraction(0)
            std = math.sqrt(var)
            out += [float(r - mean) / (std + 1e-4) for r in g]
        elif method == "dr_grpo":
            out += [float(r - mean) for r in g]
        else:  # rloo: baseline = mean of the other n − 1 samples
            total = sum(g)
            out += [float(r - (total - r) / (n - 1)) for r in g]
    return out
