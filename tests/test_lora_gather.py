"""LoRA weights leaving the trainer: the merged push in the engine's dtype, and the adapter alone in
every LoRA checkpoint (PEFT format, `trainer.ADAPTER_DIR`)."""

import pytest
import torch

pytest.importorskip("peft")


def _lora_trainer(tiny_model_dir, tok):
    from accelerate import Accelerator

    from vineppo.config import load_config
    from vineppo.trainer import Trainer

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", "model.dtype=float32",
                             "model.gradient_checkpointing=false", "model.lora.r=4", "iterations=1",
                             "ppo.minibatch_size=4", "ppo.micro_batch_size=4", "episodes.questions_per_iteration=1",
                             "episodes.samples_per_question=4"])
    trainer = Trainer(cfg, Accelerator(cpu=True), tok, progress=False)
    with torch.no_grad():  # a trained adapter
        for n, p in trainer.unwrapped_policy().named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    return trainer


def test_merged_push_comes_in_the_engine_dtype(tiny_model_dir, tiny_tokenizer):
    trainer = _lora_trainer(tiny_model_dir, tiny_tokenizer)
    full = trainer.policy_state_dict()
    half = trainer.policy_state_dict(torch.bfloat16)
    assert sorted(full) == sorted(half)
    live = {n.replace(".base_layer", ""): p for n, p in trainer.unwrapped_policy().get_base_model().named_parameters()}
    merged = [k for k in full if k.split(".")[-2] in trainer.cfg.model.lora.target_modules]
    assert merged
    for k in full:
        if k in merged:  # a new tensor: cast once, from the fp32 merge
            assert half[k].dtype == torch.bfloat16 and torch.equal(half[k], full[k].to(torch.bfloat16))
            assert not torch.equal(full[k], live[k])  # the adapter's delta is in it
        elif k in live:  # a resident full parameter: handed over as is, no copy
            assert half[k].data_ptr() == live[k].data_ptr() and half[k].dtype == torch.float32


def test_lora_checkpoint_holds_the_adapter_alone(tiny_model_dir, tiny_tokenizer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from vineppo.trainer import ADAPTER_DIR

    trainer = _lora_trainer(tiny_model_dir, tiny_tokenizer)
    trainer.save_pretrained(tmp_path / "ck")
    files = sorted(p.name for p in (tmp_path / "ck" / ADAPTER_DIR).iterdir())
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)  # (+ PEFT's model card)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, tmp_path / "ck" / ADAPTER_DIR).eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "ck", dtype=torch.float32).eval()
    live = dict(trainer.unwrapped_policy().named_parameters())
    for k, v in loaded.named_parameters():  # exactly the trainer's adapter (and base) tensors
        assert torch.equal(v, live[k]), k
    ids = torch.tensor([tiny_tokenizer("Tom has 3 apples and buys 4 more.")["input_ids"]])
    with torch.no_grad():  # (fp32 kernels differ by ~1e-4 between runs on this CPU: not a bitwise check)
        want = trainer.unwrapped_policy()(input_ids=ids).logits
        torch.testing.assert_close(loaded(input_ids=ids).logits, want, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(merged(input_ids=ids).logits, want, rtol=1e-3, atol=1e-3)
