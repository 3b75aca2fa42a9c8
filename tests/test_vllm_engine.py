"""vLLM-specific behaviour of VLLMEngine (the shared contract is in test_engine_interface.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from vineppo.engine import SamplingParams
from vineppo.tokens import encode_prompt


def read_jsonl(path, limit):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(limit), f)]


pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("one_torch_thread")]

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=16)


@pytest.fixture(scope="module")
def rows(shared_data_dir):
    return read_jsonl(shared_data_dir / "gsm8k" / "test.jsonl", 30)


@pytest.fixture(scope="module")
def short_prompts(rows, tiny_tokenizer):
    return [encode_prompt(tiny_tokenizer, r["question"]) for r in rows[:4]]


@pytest.fixture(scope="module")
def long_prompts(rows, tiny_tokenizer):
    """Prompts longer than two 128-token KV blocks sharing a long prefix (like MC states)."""
    prefix = "\n\n".join(r["question"] for r in rows[4:12])
    prompts = [encode_prompt(tiny_tokenizer, prefix + "\n\n" + r["question"]) for r in rows[12:16]]
    assert min(len(p) for p in prompts) > 300
    return prompts


@pytest.fixture(scope="module")
def perturbed_model(tiny_hf_model):
    """The tiny model with every weight moved (noise of 5 % of its scale): greedy output changes."""
    m = copy.deepcopy(tiny_hf_model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05 * (p.std() + 1e-3))
    return m


@torch.no_grad()
def hf_greedy_ids(model, tokenizer, prompt, max_new=16):
    x = torch.tensor([prompt])
    out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    ids = out[0, len(prompt):].tolist()
    return ids[:ids.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in ids else ids


def ids_of(results):
    return [[c.token_ids for c in row] for row in results]


def test_update_in_place_same_llm_no_disk_read(vllm_engine, tiny_model_dir, perturbed_model, tiny_tokenizer,
                                               short_prompts, long_prompts, monkeypatch):
    import vllm.model_executor.model_loader.reload.inplace as inplace

    prompts = short_prompts + long_prompts
    vllm_engine.generate(prompts, GREEDY)  # fills the prefix cache with blocks of the old weights
    llm = vllm_engine.llm
    version = vllm_engine.weights_version

    def no_loader(*a, **k):
        raise AssertionError("update_weights must not load weights from disk")

    monkeypatch.setattr(inplace, "get_model_loader", no_loader)
    weights = sorted(Path(tiny_model_dir).glob("*.safetensors"))
    assert weights
    hidden = [w.rename(w.with_suffix(".hidden")) for w in weights]  # no checkpoint to read
    try:
        vllm_engine.update_weights(perturbed_model.state_dict())
    finally:
        for h, w in zip(hidden, weights):
            h.rename(w)
    assert vllm_engine.llm is llm  # no new LLM object
    assert vllm_engine.weights_version == version + 1
    assert vllm_engine.last_sync["method"].startswith("in_process")
    out = vllm_engine.generate(prompts, GREEDY)
    for p, row in zip(prompts, out):  # long prompts: stale cached blocks would show here
        assert row[0].token_ids == hf_greedy_ids(perturbed_model, tiny_tokenizer, p)


def test_disk_fallback_reload(vllm_engine, perturbed_model, tiny_tokenizer, short_prompts):
    """collective_rpc("reload_weights", weights_path=...) path (multi-process executors)."""
    vllm_engine.weight_sync = "disk"
    try:
        vllm_engine.update_weights(perturbed_model.state_dict())
    finally:
        vllm_engine.weight_sync = "auto"
    assert vllm_engine.last_sync["method"].startswith("disk")
    out = vllm_engine.generate(short_prompts, GREEDY)
    for p, row in zip(short_prompts, out):
        assert row[0].token_ids == hf_greedy_ids(perturbed_model, tiny_tokenizer, p)


def test_prefix_cache_metrics_and_tokens_per_s(vllm_engine, long_prompts):
    vllm_engine.stats.reset()
    # MC-style: all unique states in one call, n=K each; they share a long prompt prefix.
    vllm_engine.generate(long_prompts, SamplingParams(n=4, temperature=1.0, max_new_tokens=8))
    snap = vllm_engine.stats.reset()
    x = snap.extra
    assert x["prefix_cache_queries"] > 0
    assert 0 < x["prefix_cache_hit_rate"] <= 1
    assert x["prefix_cache_hits"] > 0
    assert x["tokens_per_s"] > 0
    assert snap.calls == 1 and snap.prompts == len(long_prompts) and snap.generated_tokens > 0


def test_seeded_n_k_reproducible_across_calls_and_instances(vllm_engine, tiny_model_dir, tiny_tokenizer,
                                                            short_prompts, long_prompts):
    from vineppo.engine.vllm import VLLMEngine

    prompts = short_prompts + long_prompts
    sp = SamplingParams(n=3, temperature=1.0, max_new_tokens=10, seed=2024)
    first = ids_of(vllm_engine.generate(prompts, sp))
    second = ids_of(vllm_engine.generate(prompts, sp))  # now with prefix-cache hits
    assert first == second
    other = VLLMEngine(tiny_model_dir, tiny_tokenizer, dtype="float32", seed=0, progress=False)
    try:
        assert ids_of(other.generate(prompts, sp)) == first
    finally:
        other.close()
    # Closing a second engine leaves the first one (and vLLM's shared state) working.
    assert ids_of(vllm_engine.generate(prompts, sp)) == first


def test_unseeded_calls_differ_and_keep_callers_rng(vllm_engine, short_prompts):
    sp = SamplingParams(n=2, temperature=1.0, max_new_tokens=10)
    torch.manual_seed(99)
    state = torch.get_rng_state()
    a = ids_of(vllm_engine.generate(short_prompts, sp))
    b = ids_of(vllm_engine.generate(short_prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=10, seed=5)))
    c = ids_of(vllm_engine.generate(short_prompts, sp))
    assert torch.equal(torch.get_rng_state(), state)  # the trainer's RNG stream is untouched
    assert a != c  # the engine's own stream advances
    assert a != b


def test_threads_kept_for_the_trainer(vllm_engine, short_prompts):
    assert torch.set_num_threads is torch._C.set_num_threads  # vLLM's process-wide no-op undone
    torch.set_num_threads(2)
    assert torch.get_num_threads() == 2
    vllm_engine.generate(short_prompts, GREEDY)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    assert torch.get_num_threads() == 1


def test_generate_while_asleep_raises(vllm_engine, short_prompts):
    vllm_engine.sleep()
    assert vllm_engine.sleeping
    with pytest.raises(RuntimeError, match="wake"):
        vllm_engine.generate(short_prompts, GREEDY)
    vllm_engine.wake()
    assert not vllm_engine.sleeping
    assert len(vllm_engine.generate(short_prompts, GREEDY)) == len(short_prompts)


def test_untruncated_logprobs_patch_and_bad_inputs(vllm_engine, short_prompts):
    assert vllm_engine.logprobs_mode == "processed_logprobs"
    assert vllm_engine.untruncated_logprobs
    with pytest.raises(ValueError):
        vllm_engine.generate([[]], GREEDY)
    with pytest.raises(TypeError):  # right names, not tensors: rejected before the engine is touched
        vllm_engine.update_weights({k: "x" for k in vllm_engine._expected})
    assert len(vllm_engine.generate(short_prompts, GREEDY)) == len(short_prompts)


def test_gpu_paths_simulated_on_cpu(vllm_engine, perturbed_model, tiny_tokenizer, short_prompts):
    """Code paths taken on GPUs, driven on CPU (where vLLM's sleep is a no-op and per-request seeds
    crash): per-request seeds spaced by n, and the deferred push in wake() (weights -> push -> KV)."""
    eng = vllm_engine
    saved = eng.is_cpu, eng.sleep_supported, eng.sleep_level
    try:
        eng.is_cpu = False
        params = eng._vllm_params(SamplingParams(n=3, temperature=1.0, seed=7), 4)
        seeds = [p.seed for p in params]
        assert len(params) == 4 and all(b - a == 3 for a, b in zip(seeds, seeds[1:]))
        assert eng._vllm_params(SamplingParams(n=3, temperature=1.0), 4).seed is None
        eng.is_cpu = saved[0]
        eng.sleep_supported = True
        for level in (1, 2):
            eng.sleep_level = level
            eng.sleep()
            version = eng.weights_version
            eng.update_weights(perturbed_model.state_dict())
            assert eng.weights_version == version  # deferred while asleep
            eng.wake()
            assert eng.weights_version == version + 1 and not eng.sleeping
        out = eng.generate(short_prompts, GREEDY)
        for p, row in zip(short_prompts, out):
            assert row[0].token_ids == hf_greedy_ids(perturbed_model, tiny_tokenizer, p)
        eng.sleep()
        with pytest.raises(RuntimeError, match="update_weights"):
            eng.wake()  # level 2 without new weights: refuse to run on discarded weights
        eng.update_weights(perturbed_model.state_dict())
        eng.wake()
    finally:
        eng.is_cpu, eng.sleep_supported, eng.sleep_level = saved


def test_auto_dtype_is_the_checkpoints(vllm_engine, tiny_model_dir):
    """dtype="auto" means the checkpoint's dtype (vLLM's own "auto" serves float32 as bfloat16,
    whose log-probs do not match a float32 trainer)."""
    from vineppo.engine.vllm import _checkpoint_dtype

    assert _checkpoint_dtype(str(tiny_model_dir)) == "float32"
    assert vllm_engine.dtype == torch.float32
