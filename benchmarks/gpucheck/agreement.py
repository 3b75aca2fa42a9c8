"""Does the engine run the model's weights? Teacher-forced log-probs, a tolerance and a control.

Greedy equality between a bf16 engine and a model in another precision flips on near-ties (a few
per cent of tokens): it fails right code about half the time. Instead the engine samples
continuations with their log-probs (log_softmax(logits / T) of each sampled token, the trainer's
definition), the model scores the same tokens teacher-forced, and the mean absolute difference
per token (averaged over sequences, as the trainer's `sync/logprob_gap`) must stay within
`MAX_LOGPROB_GAP`. A bf16 engine and the trainer differ by 2e-3 to 1.1e-2 per token on the
SFT'ed tiny model at T = 0.6 (measured in CPU rehearsals, fp32 trainer against a bf16 engine);
after one training iteration, weights that were not pushed differ by 0.5 to 2.3. Every check also
measures that control, the gap against weights the engine does not hold, which must exceed the
tolerance: a check whose control agrees could not tell a missing push from a working one. (The
bound is for the tiny model, whose logits are small; a larger model's bf16 gap is larger.)
"""

from __future__ import annotations

from typing import Sequence

import torch

#: the largest mean |log p_engine − log p_model| per token accepted as "the same weights" in bf16
MAX_LOGPROB_GAP = 5e-2


def logprob_gap(engine_lps: Sequence[Sequence[float]], model_lps: Sequence[Sequence[float]]) -> float:
    """Mean over sequences of the mean |a − b| over their tokens (empty sequences skipped); the
    statistic of the trainer's sync canary."""
    per_seq = []
    for a, b in zip(engine_lps, model_lps, strict=True):
        k = min(len(a), len(b))
        if k:
            per_seq.append(sum(abs(x - y) for x, y in zip(a[:k], b[:k])) / k)
    if not per_seq:
        raise ValueError("no tokens to compare: every sequence is empty")
    return sum(per_seq) / len(per_seq)


def judge_agreement(gap: float, control_gap: float, tolerance: float = MAX_LOGPROB_GAP) -> tuple[bool, str]:
    """Pass iff the pushed weights agree (`gap` <= tolerance) and the control disagrees
    (`control_gap` > tolerance). Returns (ok, one-line detail)."""
    text = f"logprob gap {gap:.2e} (tolerance {tolerance:.0e}), control without the push {control_gap:.2e}"
    if not gap <= tolerance:  # NaN fails too
        return False, f"{text}: the engine does not hold the pushed weights"
    if not control_gap > tolerance:
        return False, f"{text}: the control agrees too, so this check cannot tell a missing push"
    return True, text


@torch.no_grad()
def teacher_forced_logprobs(model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                            temperature: float, device=None, autocast_dtype: torch.dtype | None = None,
                            batch_size: int = 16) -> list[list[float]]:
    """log_softmax(logits / T) of each response token given the prompt and the tokens before it,
    under `model` (optionally in autocast, as the trainer computes them)."""
    from vineppo.losses import logprobs_from_logits

    device = torch.device(device) if device is not None else next(model.parameters()).device
    out: list[list[float]] = []
    pairs = list(zip(prompts, responses))
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i: i + batch_size]
        seqs = [list(p) + list(r) for p, r in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for j, s in enumerate(seqs):  # right padding: positions stay those of an unpadded sequence
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        ids, mask = ids.to(device), mask.to(device)
        ctx = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
               else torch.autocast(device.type, enabled=False))
        with ctx:
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        lp = logprobs_from_logits(logits[:, :-1], ids[:, 1:], temperature).float().cpu()
        for j, (p, r) in enumerate(chunk):
            out.append(lp[j, len(p) - 1: len(p) - 1 + len(r)].tolist())
    return out


def engine_gap(engine, model, prompts: Sequence[Sequence[int]], *, temperature: float = 0.6, top_p: float = 0.9,
               max_new_tokens: int = 32, n: int = 2, seed: int = 0, autocast_dtype: torch.dtype | None = None
               ) -> tuple[float, int]:
    """The engine samples `n` continuations per prompt with their log-probs; `model` scores the same
    tokens teacher-forced. Returns (logprob_gap, tokens compared)."""
    from vineppo.engine.base import SamplingParams

    outs = engine.generate(list(prompts), SamplingParams(n=n, temperature=temperature, top_p=top_p,
                                                         max_new_tokens=max_new_tokens, seed=seed, logprobs=True))
    ps, rs, elps = [], [], []
    for p, completions in zip(prompts, outs):
        for c in completions:
            if c.token_ids:
                ps.append(p)
                rs.append(c.token_ids)
                elps.append(c.logprobs)
    mlps = teacher_forced_logprobs(model, ps, rs, temperature, autocast_dtype=autocast_dtype)
    return logprob_gap(elps, mlps), sum(len(r) for r in rs)
