"""Untruncated sampled-token log-probs from vLLM's sampler (the sync canary's definition).

``Completion.logprobs`` are log_softmax(logits / T) of the sampled tokens without top-p
truncation (the trainer's definition). vLLM is run with ``logprobs_mode="processed_logprobs"``
(exactly that when top_p == 1); for top_p < 1 its sampler is patched in each worker to return the
log-softmax computed *before* top-k/top-p masking. At T == 0 vLLM reports log_softmax(logits).

vLLM has two GPU model runners with different samplers, and each gets its own patch:
- the V1 runner (``vllm/v1/worker/gpu_model_runner.py``; also what the CPU build runs): its
  sampler's ``topk_topp_sampler`` computes the processed log-probs; its ``forward`` is wrapped.
- the V2 runner (``vllm/v1/worker/gpu/``; CUDA vLLM 0.32's default): ``Sampler.sample`` returns
  the logits from ``_sample_random`` *after* ``apply_top_k_top_p`` (which may mask in place), and
  ``Sampler.__call__`` takes the processed log-probs from those; ``_sample_random`` is wrapped to
  hand back a copy taken before the masking.
If neither patch fits (another vLLM), a warning says that log-probs are renormalised over the
nucleus and names the way out (`V1_RUNNER_ENV`).
"""

from __future__ import annotations

import enum
import inspect

#: set to "0" before the engine starts to make CUDA vLLM use the V1 model runner
V1_RUNNER_ENV = "VLLM_USE_V2_MODEL_RUNNER"
#: the V2 sampler's `_sample_random` parameters the patch relies on (vLLM 0.32)
V2_SAMPLE_RANDOM_PARAMS = ("processed_logits", "expanded_idx_mapping", "idx_mapping_np", "pos", "top_k", "top_p",
                           "use_fused_sampler")


def logprobs_mode_name(mode) -> str | None:
    """The name of a vLLM log-probs mode, by value: vLLM 0.10 holds it as an Enum member
    (`LogprobsMode.PROCESSED_LOGPROBS`, whose value is "processed_logprobs"), 0.11 and later as the
    plain string (a Literal)."""
    value = getattr(mode, "value", mode)
    return value if isinstance(value, str) else None


def install_untruncated_logprobs(worker) -> bool:
    """Worker-side (runs via collective_rpc): make the worker's sampler return log_softmax(logits / T)
    computed before top-k/top-p masking, for the `processed_logprobs` mode. Returns success."""
    runner = getattr(worker, "model_runner", None)
    sampler = getattr(runner, "sampler", None)
    if sampler is None or logprobs_mode_name(getattr(sampler, "logprobs_mode", None)) != "processed_logprobs":
        return False
    if getattr(sampler, "topk_topp_sampler", None) is not None:
        return _patch_v1_sampler(sampler)
    return patch_v2_sampler(sampler)


def _patch_v1_sampler(sampler) -> bool:
    import torch as _torch

    tts = sampler.topk_topp_sampler
    if not callable(getattr(tts, "forward", None)):
        return False
    if getattr(tts, "_vineppo_untruncated", False):
        return True
    inner = tts.forward

    def forward(logits, *args, **kwargs):
        # Temperature is already applied here; top-k/top-p (applied next, in place) is not.
        logprobs = logits.log_softmax(dim=-1, dtype=_torch.float32)
        sampled, _ = inner(logits, *args, **kwargs)
        return sampled, logprobs

    tts.forward = forward
    # The wrapped sampler no longer needs to build its own (truncated) processed log-probs; the new
    # mode keeps the type vLLM compares with (its Enum on vLLM 0.10, a string later).
    mode = tts.logprobs_mode
    tts.logprobs_mode = type(mode)("raw_logprobs") if isinstance(mode, enum.Enum) else "raw_logprobs"
    tts._vineppo_untruncated = True
    return True


def patch_v2_sampler(sampler) -> bool:
    """Wrap the V2 runner's ``sampler._sample_random`` so that the logits it returns (from which
    vLLM computes the processed log-probs) are those before top-k/top-p masking. The sampled tokens
    are untouched. Returns False (nothing changed) when the sampler is not the shape this was
    written against, or when it also returns a sampling mask built from the masked logits."""
    inner = getattr(sampler, "_sample_random", None)
    if not callable(inner):
        return False
    if getattr(sampler, "_vineppo_untruncated", False):
        return True
    try:
        params = tuple(inspect.signature(inner).parameters)
    except (TypeError, ValueError):
        return False
    if params != V2_SAMPLE_RANDOM_PARAMS or getattr(sampler, "return_sampling_mask", False):
        return False

    def _sample_random(processed_logits, expanded_idx_mapping, idx_mapping_np, pos, top_k, top_p,
                       use_fused_sampler):
        untruncated = processed_logits if top_k is None and top_p is None else processed_logits.clone()
        sampled, _ = inner(processed_logits, expanded_idx_mapping, idx_mapping_np, pos, top_k, top_p,
                           use_fused_sampler)
        return sampled, untruncated

    sampler._sample_random = _sample_random
    sampler._vineppo_untruncated = True
    return True
