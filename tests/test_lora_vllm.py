"""LoRA policy through vLLM: merged weights in place and adapter-only updates both leave
the engine's greedy output equal to the merged model's."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("peft")

GREEDY_TOKENS = 16


def _trainer(model_dir, sync: str):
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from vineppo.config import load_config
    from vineppo.trainer import Trainer

    cfg = load_config(None, [f"model.name_or_path={model_dir}", "model.dtype=float32",
                             "model.gradient_checkpointing=false", "model.lora.r=4", f"model.lora.sync={sync}"])
    tok = AutoTokenizer.from_pretrained(model_dir)
    return Trainer(cfg, Accelerator(cpu=True), tok, progress=False), tok


def _train_adapter(trainer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in trainer.unwrapped_policy().named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _merged_greedy(trainer, tok, prompts):
    merged = copy.deepcopy(trainer.unwrapped_policy()).merge_and_unload().eval()
    out = []
    for p in prompts:
        ids = merged.generate(torch.tensor([p]), do_sample=False, max_new_tokens=GREEDY_TOKENS,
                              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, len(p):].tolist()
        out.append(ids[: ids.index(tok.eos_token_id)] if tok.eos_token_id in ids else ids)
    return out


@pytest.mark.vllm
@pytest.mark.parametrize("sync", ["merged", "adapter"])
def test_lora_sync_matches_merged_model(tiny_model_dir, tiny_texts, sync, one_torch_thread):
    from vineppo.engine import SamplingParams
    from vineppo.engine.vllm import VLLMEngine
    from vineppo.lora_sync import PolicySync, uses_adapter_sync, vllm_lora_engine_kwargs
    from vineppo.tokens import encode_prompt

    trainer, tok = _trainer(tiny_model_dir, sync)
    adapter = uses_adapter_sync(trainer.cfg.model.lora, "vllm")
    assert adapter == (sync == "adapter")
    extra = vllm_lora_engine_kwargs(trainer.cfg.model.lora) if adapter else {}
    engine = VLLMEngine(tiny_model_dir, tok, dtype="float32", seed=0, progress=False, **extra)
    policy_sync = PolicySync(adapter)
    try:
        prompts = [encode_prompt(tok, t.split("\n")[0]) for t in tiny_texts[:6]]
        greedy = SamplingParams(temperature=0.0, max_new_tokens=GREEDY_TOKENS)
        base = [c[0].token_ids for c in engine.generate(prompts, greedy)]
        for step in range(2):  # two "training steps": the second sync replaces the first policy
            _train_adapter(trainer, seed=step)
            policy_sync.push(engine, trainer)
            got = [c[0].token_ids for c in engine.generate(prompts, greedy)]
            assert got == _merged_greedy(trainer, tok, prompts)
        assert got != base  # the adapter really changed the engine's policy
        if adapter:
            assert engine.last_sync["method"] == "lora_adapter" and engine.lora_request.lora_int_id == 2
    finally:
        policy_sync.close()
        engine.close()


def test_lora_rank_rounds_up_to_a_vllm_rank():
    from vineppo.config import LoraConfig
    from vineppo.lora_sync import vllm_lora_engine_kwargs

    assert vllm_lora_engine_kwargs(LoraConfig(r=4))["max_lora_rank"] == 8
    assert vllm_lora_engine_kwargs(LoraConfig(r=16))["max_lora_rank"] == 16
    with pytest.raises(ValueError):
        vllm_lora_engine_kwargs(LoraConfig(r=1000))
