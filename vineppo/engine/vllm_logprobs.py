"""Untruncated sampled-token log-probs from vLLM's sampler (the sync canary's definition).

``Completion.logprobs`` are log_softmax(logits / T) of the sampled tokens without top-p
truncation (the trainer's definition). vLLM is run with ``logprobs_mode="processed_logprobs"``
(exactly that when top_p == 1); for top_p < 1 its sampler is patched in each worker to return the
log-softmax computed *before* top-p masking (V1 sampler; if the patch cannot be installed, a
warning says that log-probs are renormalised over the nucleus). At T == 0 vLLM reports
log_softmax(logits).
"""

from __future__ import annotations


def install_untruncated_logprobs(worker) -> bool:
    """Worker-side (runs via collective_rpc): make the V1 sampler return log_softmax(logits / T)
    computed before top-k/top-p masking, for the `processed_logprobs` mode. Returns success."""
    import torch as _torch

    runner = getattr(worker, "model_runner", None)
    sampler = getattr(runner, "sampler", None)
    tts = getattr(sampler, "topk_topp_sampler", None)
    if tts is None or not callable(getattr(tts, "forward", None)):
        return False
    if getattr(tts, "_vineppo_untruncated", False):
        return True
    if getattr(sampler, "logprobs_mode", None) != "processed_logprobs":
        return False
    inner = tts.forward

    def forward(logits, *args, **kwargs):
        # Temperature is already applied here; top-k/top-p (applied next, in place) is not.
        logprobs = logits.log_softmax(dim=-1, dtype=_torch.float32)
        sampled, _ = inner(logits, *args, **kwargs)
        return sampled, logprobs

    tts.forward = forward
    # The wrapped sampler no longer needs to build its own (truncated) processed log-probs.
    tts.logprobs_mode = "raw_logprobs"
    tts._vineppo_untruncated = True
    return True
