"""Optional LoRA policy: merged weights reach the engine and the saved checkpoint."""

import pytest
import torch

pytest.importorskip("peft")


def test_lora_policy_merges_into_engine_and_checkpoint(tiny_model_dir, tmp_path):
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vineppo.config import load_config
    from vineppo.engine.base import SamplingParams
    from vineppo.engine.hf import HFEngine
    from vineppo.trainer import Trainer

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", "model.dtype=float32",
                             "model.gradient_checkpointing=false", "model.lora.r=4", "iterations=1",
                             "ppo.minibatch_size=8", "ppo.micro_batch_size=8", "episodes.questions_per_iteration=2",
                             "episodes.samples_per_question=4"])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = Trainer(cfg, Accelerator(cpu=True), tok, progress=False)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    sd = trainer.policy_state_dict()
    assert set(sd) == set(base.state_dict())
    # a trained adapter: make lora_B non-zero so the merged weights differ from the base
    with torch.no_grad():
        for n, p in trainer.unwrapped_policy().named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    merged = trainer.policy_state_dict()
    assert any(not torch.equal(merged[k], base.state_dict()[k]) for k in merged)
    # unmerged again afterwards: the adapter model's own forward is unchanged by the call
    engine = HFEngine(base, tok, progress=False)
    engine.update_weights(merged)
    trainer.save_pretrained(tmp_path / "ck")
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "ck", dtype=torch.float32).eval()
    prompt = [tok.bos_token_id] + tok("Tom has 3 apples.", add_special_tokens=False)["input_ids"]
    got = engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=12))[0][0].token_ids
    ref = saved.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, len(prompt):].tolist()
    if tok.eos_token_id in ref:
        ref = ref[: ref.index(tok.eos_token_id)]
    assert got == ref
    with torch.no_grad():
        peft_out = trainer.unwrapped_policy()(input_ids=torch.tensor([prompt])).logits
        saved_out = saved(input_ids=torch.tensor([prompt])).logits
    torch.testing.assert_close(peft_out, saved_out, rtol=1e-4, atol=1e-4)
