"""Optional LoRA policy: merged weights reach the engine (in the engine's dtype) and the saved
checkpoint, and every LoRA checkpoint holds the adapter alone too (PEFT format, `trainer.ADAPTER_DIR`)."""

import pytest
import torch

pytest.importorskip("peft")


def _lora_trainer(tiny_model_dir, tok):
    from accelerate import Accelerator

    from vineppo.config import load_config
    from vineppo.trainer import Trainer

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", "model.dtype=float32",
                             "model.gradient_checkpointing=false", "model.lora.r=4", "iterations=1",
                             "ppo.minibatch_size=8", "ppo.micro_batch_size=8", "episodes.questions_per_iteration=2",
                             "episodes.samples_per_question=4"])
    return Trainer(cfg, Accelerator(cpu=True), tok, progress=False)


def _train_adapter(trainer) -> None:
    """A trained adapter: lora_B non-zero, so the merged weights differ from the base."""
    with torch.no_grad():
        for n, p in trainer.unwrapped_policy().named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)


def test_lora_policy_merges_into_engine_and_checkpoint(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vineppo.engine.base import SamplingParams
    from vineppo.engine.hf import HFEngine

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = _lora_trainer(tiny_model_dir, tok)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    sd = trainer.policy_state_dict()
    assert set(sd) == set(base.state_dict())
    _train_adapter(trainer)
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


def test_merged_push_comes_in_the_engine_dtype(tiny_model_dir, tiny_tokenizer):
    trainer = _lora_trainer(tiny_model_dir, tiny_tokenizer)
    _train_adapter(trainer)
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
    _train_adapter(trainer)
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


def test_adapter_push_reaches_the_engine_of_a_rank_that_does_not_write_checkpoints(
        tiny_model_dir, monkeypatch, one_torch_thread):
    """Adapter sync under several processes: every rank's engine loads the adapter from a directory
    of its own. Here the trainer is told it is not the main process (rank 1 of a launch); the
    engine must still find the trained adapter in the directory it is given, and the greedy
    check's `keep` returns the merged weights that adapter amounts to."""
    from accelerate import Accelerator
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from vineppo.lora_sync import PolicySync

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = _lora_trainer(tiny_model_dir, tok)
    _train_adapter(trainer)
    monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    monkeypatch.setattr(Accelerator, "wait_for_everyone", lambda self: None)
    assert not trainer.acc.is_main_process

    class Engine:
        loaded: dict = {}

        def update_adapter(self, path):
            Engine.loaded = load_file(str(path / "adapter_model.safetensors"))  # what vLLM's add_lora reads

    sync = PolicySync(adapter=True)
    try:
        kept = sync.push(Engine(), trainer, keep=True)
    finally:
        sync.close()
    # PEFT saves the adapter without its name ("default") in the parameter names
    live = {n.replace(".default", ""): p.detach() for n, p in trainer.unwrapped_policy().named_parameters()
            if "lora_" in n}
    assert sorted(Engine.loaded) == sorted(live) and live
    for k, v in live.items():
        torch.testing.assert_close(Engine.loaded[k], v, rtol=0, atol=0)
    torch.testing.assert_close(kept, trainer.policy_state_dict(), rtol=0, atol=0)
    assert all("lora_" not in k for k in kept)
