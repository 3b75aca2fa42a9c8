"""The untruncated log-prob patch on both of vLLM's samplers, and the engine's sleep/wake order, on
CPU without a GPU: vLLM's V2 model runner (CUDA vLLM 0.32's default, never run by the CPU build)
is driven through its real `Sampler._sample_random` with a CPU stand-in for its Triton Gumbel
kernel; the wake order is checked against a recording stand-in for `vllm.LLM`."""

from __future__ import annotations

import enum
import os
import types

import pytest
import torch

from vineppo.engine.vllm_logprobs import V2_SAMPLE_RANDOM_PARAMS, install_untruncated_logprobs, patch_v2_sampler

LOGITS = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0], [0.1, 0.0, 3.0, 2.5, -0.5]])
TOP_P = torch.tensor([0.6, 0.6])


def _v2_sampler():
    """A real V2 `Sampler` without its GPU state: only what `_sample_random` reads."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from vllm.v1.worker.gpu.sample.sampler import Sampler

    s = Sampler.__new__(Sampler)
    s.logprobs_mode = "processed_logprobs"
    s.return_sampling_mask = False
    s.use_flashinfer = s.use_xpu_sampler = s.use_fp64_gumbel = False
    s.sampling_states = types.SimpleNamespace(temperature=types.SimpleNamespace(gpu=None),
                                              seeds=types.SimpleNamespace(gpu=None))
    return s


def _argmax_gumbel(logits, *args, **kwargs):  # CPU stand-in for the Triton kernel: greedy over the kept set
    return logits.argmax(dim=-1)


@pytest.mark.vllm
def test_v2_sampler_shape_is_what_the_patch_wraps():
    """The V2 sampler of the installed vLLM: `sample` returns `_sample_random`'s logits, which
    `__call__` turns into the processed log-probs; `_sample_random` has the parameters wrapped."""
    import inspect

    from vllm.v1.worker.gpu.sample.sampler import Sampler

    assert tuple(inspect.signature(Sampler._sample_random).parameters)[1:] == V2_SAMPLE_RANDOM_PARAMS
    assert "return self._sample_random(" in inspect.getsource(Sampler.sample)
    call = inspect.getsource(Sampler.__call__)
    assert "logits = processed_logits" in call and "PROCESSED_LOGPROBS_MODES" in call


@pytest.mark.vllm
def test_v2_patch_returns_logits_before_top_p(monkeypatch):
    import vllm.v1.worker.gpu.sample.sampler as v2

    monkeypatch.setattr(v2, "gumbel_sample", _argmax_gumbel)
    plain = _v2_sampler()
    _, truncated = plain._sample_random(LOGITS.clone(), None, None, None, None, TOP_P, False)
    assert torch.isinf(truncated).any()  # vLLM's own path: masked (renormalised over the nucleus)

    s = _v2_sampler()
    worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(sampler=s))
    assert install_untruncated_logprobs(worker) and install_untruncated_logprobs(worker)  # idempotent
    sampled, logits = s._sample_random(LOGITS.clone(), None, None, None, None, TOP_P, False)
    assert sampled.tolist() == [0, 2]  # sampling itself unchanged
    torch.testing.assert_close(logits, LOGITS)
    lp = logits.log_softmax(-1).gather(1, sampled[:, None]).squeeze(1)
    torch.testing.assert_close(lp, LOGITS.log_softmax(-1)[[0, 1], [0, 2]])
    assert (lp < truncated.log_softmax(-1)[[0, 1], [0, 2]]).all()


def test_v2_patch_refuses_other_shapes():
    def other(processed_logits, top_p):
        return processed_logits.argmax(-1), processed_logits

    odd = types.SimpleNamespace(logprobs_mode="processed_logprobs", _sample_random=other)
    assert not patch_v2_sampler(odd) and odd._sample_random is other
    masked = types.SimpleNamespace(logprobs_mode="processed_logprobs", return_sampling_mask=True)
    masked._sample_random = lambda processed_logits, expanded_idx_mapping, idx_mapping_np, pos, top_k, top_p, \
        use_fused_sampler: None
    assert not patch_v2_sampler(masked)
    raw = types.SimpleNamespace(model_runner=types.SimpleNamespace(sampler=types.SimpleNamespace(
        logprobs_mode="raw_logprobs", topk_topp_sampler=None)))
    assert not install_untruncated_logprobs(raw)


class _Mode(enum.Enum):
    """What vLLM 0.10 holds in `sampler.logprobs_mode` (`vllm.config.LogprobsMode`): an Enum whose
    members never equal their string values."""
    RAW_LOGPROBS = "raw_logprobs"
    PROCESSED_LOGPROBS = "processed_logprobs"


class _V1TopKTopP:
    """vLLM's V1 `TopKTopPSampler.forward_native` in miniature: top-p masking in place, then the
    processed log-probs only when its mode asks for them (compared with the Enum, as vLLM 0.10 does)."""

    def __init__(self, mode):
        self.logprobs_mode = mode

    def forward(self, logits, generators, k, p):
        sorted_logits, idx = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = (cum - sorted_logits.softmax(-1)) >= p[:, None]
        logits.scatter_(1, idx, sorted_logits.masked_fill(drop, float("-inf")))
        out = logits.log_softmax(-1) if self.logprobs_mode == _Mode.PROCESSED_LOGPROBS else None
        return logits.argmax(-1), out


def _v1_worker(mode):
    sampler = types.SimpleNamespace(logprobs_mode=mode, topk_topp_sampler=_V1TopKTopP(mode))
    return types.SimpleNamespace(model_runner=types.SimpleNamespace(sampler=sampler)), sampler


def test_v1_patch_applies_when_the_mode_is_an_enum():
    """vLLM 0.10's LogprobsMode is an Enum: the mode is compared by value, so the patch applies; the
    wrapped sampler returns log_softmax before top-p and its own mode becomes the Enum's raw member
    (so it builds no truncated log-probs of its own)."""
    from vineppo.engine.vllm_logprobs import logprobs_mode_name

    assert _Mode.PROCESSED_LOGPROBS != "processed_logprobs"  # why a string comparison never matched
    assert logprobs_mode_name(_Mode.PROCESSED_LOGPROBS) == logprobs_mode_name("processed_logprobs")
    worker, sampler = _v1_worker(_Mode.PROCESSED_LOGPROBS)
    assert install_untruncated_logprobs(worker) and install_untruncated_logprobs(worker)  # idempotent
    tts = sampler.topk_topp_sampler
    assert tts.logprobs_mode is _Mode.RAW_LOGPROBS
    sampled, lp = tts.forward(LOGITS.clone(), {}, None, TOP_P)
    torch.testing.assert_close(lp, LOGITS.log_softmax(-1))  # untruncated
    assert sampled.tolist() == [0, 2]
    _, truncated = _V1TopKTopP(_Mode.PROCESSED_LOGPROBS).forward(LOGITS.clone(), {}, None, TOP_P)
    assert torch.isinf(truncated).any()  # what the unpatched sampler returns
    raw, _ = _v1_worker(_Mode.RAW_LOGPROBS)
    assert not install_untruncated_logprobs(raw)
    # the string modes of vLLM 0.11 and later still work
    s_worker, s_sampler = _v1_worker("processed_logprobs")
    assert install_untruncated_logprobs(s_worker) and s_sampler.topk_topp_sampler.logprobs_mode == "raw_logprobs"


class _RecordingLLM:
    """Stands in for `vllm.LLM` with sleep mode: records the calls the engine makes, in order."""

    def __init__(self, calls):
        self.calls = calls
        worker = types.SimpleNamespace(device="cpu", reload_weights=self._reload)
        self.llm_engine = types.SimpleNamespace(model_executor=types.SimpleNamespace(driver_worker=worker))

    def _reload(self, weights_iterator=None):
        self.calls.append(("reload_weights", sorted(k for k, _ in weights_iterator)))

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tags))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))


def _gpu_engine(level, calls):
    from vineppo.engine.base import EngineStats
    from vineppo.engine.vllm import VLLMEngine

    eng = VLLMEngine.__new__(VLLMEngine)
    eng.llm, eng.stats, eng.sleep_level, eng.sleep_supported = _RecordingLLM(calls), EngineStats(), level, True
    eng.is_cpu, eng.cpu_threads, eng.weight_sync, eng.dtype = False, None, "auto", torch.float32
    eng._sleeping, eng._pending, eng.weights_version, eng._weights_awake = False, None, 0, False
    eng._expected, eng._aliases = {"w": torch.Size([2])}, {}
    return eng


@pytest.mark.parametrize("level", [1, 2])
def test_sleep_wake_order_with_a_push(level):
    """The training loop's order (sleep -> train -> update_weights -> wake): the push is deferred and
    wake() does weights -> push -> KV cache -> prefix-cache reset, at level 2 (weights dropped) too."""
    calls = []
    eng = _gpu_engine(level, calls)
    eng.sleep()
    eng.update_weights({"w": torch.ones(2)})
    assert calls == [("sleep", level)] and eng.weights_version == 0  # deferred
    eng.wake()
    assert calls == [("sleep", level), ("wake_up", ["weights"]), ("reload_weights", ["w"]), ("reset_prefix_cache",),
                     ("wake_up", ["kv_cache"]), ("reset_prefix_cache",)]
    assert eng.weights_version == 1 and not eng.sleeping


@pytest.mark.parametrize("level", [1, 2])
def test_streamed_push_while_asleep_wakes_the_weights_only(level):
    """The trainer's streamed push while asleep: the weights wake, load tensor by tensor, and the
    KV cache wakes afterwards in wake() (the deferred push's order, with nothing held in between)."""
    calls = []
    eng = _gpu_engine(level, calls)
    eng.sleep()
    eng.update_weights(iter([("w", torch.ones(2))]))
    assert calls == [("sleep", level), ("wake_up", ["weights"]), ("reload_weights", ["w"]), ("reset_prefix_cache",)]
    eng.wake()
    assert calls[4:] == [("wake_up", ["kv_cache"]), ("reset_prefix_cache",)]
    assert eng.weights_version == 1 and not eng.sleeping
    eng.sleep()  # the next iteration starts from a sleeping engine again
    with pytest.raises(KeyError, match="lack"):
        eng.update_weights(iter([]))
    with pytest.raises(KeyError, match="not_a_weight"):
        eng.update_weights(iter([("not_a_weight", torch.ones(2))]))
    with pytest.raises(ValueError, match="shape"):
        eng.update_weights(iter([("w", torch.ones(3))]))


def test_level_2_refuses_to_wake_without_weights():
    calls = []
    eng = _gpu_engine(2, calls)
    eng.sleep()
    with pytest.raises(RuntimeError, match="update_weights"):
        eng.wake()
    assert ("wake_up", ["weights"]) not in calls


def test_level_2_with_lora_adapters_is_refused_up_front():
    from vineppo.engine.vllm import VLLMEngine

    with pytest.raises(ValueError, match="sleep_level=1"):
        VLLMEngine("unused", types.SimpleNamespace(eos_token_id=0), sleep_level=2, enable_lora=True)
