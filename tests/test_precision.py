"""bf16 training paths on CPU: the prepared policy's forward under
`mixed_precision: bf16` returns half-precision logits (accelerate's `convert_outputs_to_fp32`
wrapper is removed), so the chunked log-softmax is the only place logits are upcast."""

import pytest
import torch


def _trainer(tiny_model_dir, tok, acc, *extra):
    from vineppo.config import load_config
    from vineppo.trainer import Trainer

    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", "model.dtype=bfloat16",
                             "model.gradient_checkpointing=false", "iterations=1", "ppo.minibatch_size=4",
                             "ppo.micro_batch_size=4", "episodes.questions_per_iteration=1",
                             "episodes.samples_per_question=4", *extra])
    return Trainer(cfg, acc, tok, progress=False)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state: a bf16 Accelerator needs it empty, and leaves it so."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_forward_returns_half_logits_and_fp32_logprobs(tiny_model_dir, tiny_tokenizer, fresh_accelerate_state):
    from accelerate import Accelerator

    from vineppo.trainer import Batch

    acc = Accelerator(cpu=True, mixed_precision="bf16")
    assert acc.native_amp  # the wrapper under test is only installed with native AMP
    trainer = _trainer(tiny_model_dir, tiny_tokenizer, acc)
    ids = torch.tensor([tiny_tokenizer("Tom has 3 apples and buys 4 more.")["input_ids"]] * 2)
    seen = []
    handle = trainer.unwrapped_policy().register_forward_hook(lambda m, a, out: seen.append(out.logits.dtype))
    batch = Batch(ids, torch.ones_like(ids), torch.ones(ids.shape[0], ids.shape[1] - 1), ids[:, 1:])
    with torch.no_grad():
        lp = trainer._logprobs(trainer.actor, batch)
        with acc.autocast():
            out = trainer.actor(input_ids=ids, attention_mask=torch.ones_like(ids))
    handle.remove()
    # no (B, L, vocab) fp32 copy of the logits: the prepared model hands back what autocast made
    assert out.logits.dtype == torch.bfloat16 and seen == [torch.bfloat16, torch.bfloat16]
    assert lp.dtype == torch.float32 and lp.shape == (2, ids.shape[1] - 1)


def test_bf16_critic_values_come_back_in_fp32(tiny_model_dir, tiny_tokenizer, fresh_accelerate_state):
    from accelerate import Accelerator

    from vineppo.trainer import Batch

    acc = Accelerator(cpu=True, mixed_precision="bf16")
    trainer = _trainer(tiny_model_dir, tiny_tokenizer, acc, "algorithm=ppo")
    ids = torch.tensor([tiny_tokenizer("Ann has 5 pens.")["input_ids"]] * 2)
    batch = Batch(ids, torch.ones_like(ids), torch.ones(ids.shape[0], ids.shape[1] - 1), ids[:, 1:])
    with torch.no_grad():
        v = trainer._critic_values(batch)
    assert v.dtype == torch.float32 and v.shape == (2, ids.shape[1] - 1)


def test_reference_is_loaded_again_in_its_own_dtype_and_equals_the_policy(tiny_model_dir, tiny_tokenizer):
    """The reference comes from `model.name_or_path` in its dtype (no deep copy of the
    fp32 policy); at the start it holds exactly the policy's weights."""
    from accelerate import Accelerator

    trainer = _trainer(tiny_model_dir, tiny_tokenizer, Accelerator(cpu=True))
    policy = trainer.unwrapped_policy().state_dict()
    ref = trainer.reference.state_dict()
    assert sorted(ref) == sorted(policy)
    for k in policy:
        assert ref[k].dtype == torch.float32 and policy[k].dtype == torch.float32  # CPU: fp32 both
        assert torch.equal(ref[k], policy[k]), k
    assert not any(p.requires_grad for p in trainer.reference.parameters()) and not trainer.reference.training
    assert all(r.data_ptr() != p.data_ptr() for r, p in zip(trainer.reference.parameters(),
                                                            trainer.unwrapped_policy().parameters()))


def test_load_and_reference_dtypes_follow_the_strategy(monkeypatch):
    from types import SimpleNamespace

    from vineppo.distributed import AccelerateStrategy, DeepSpeedStrategy
    from vineppo.trainer import reference_dtype

    assert reference_dtype("bfloat16", "cuda") == torch.bfloat16
    assert reference_dtype("float16", "cuda") == torch.float16
    assert reference_dtype("bfloat16", "cpu") == torch.float32
    cfg = SimpleNamespace(model=SimpleNamespace(dtype="bfloat16"), optim=SimpleNamespace(max_grad_norm=1.0))
    acc = SimpleNamespace(num_processes=2, mixed_precision="bf16")
    for name in ("single", "ddp", "fsdp"):  # fp32 masters, bf16 under autocast (checkpoint dtype unknown)
        assert AccelerateStrategy(acc, cfg, name).load_dtype() == torch.float32
    ds = DeepSpeedStrategy(acc, cfg, "zero3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # DeepSpeed trains bf16 on GPUs only
    assert ds.load_dtype() == torch.bfloat16  # it casts to bf16 and keeps fp32 masters itself
    cfg.model.dtype = "float32"
    assert ds.load_dtype() == torch.float32


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_checkpoint_weights_are_written_in_the_training_dtype(tiny_model_dir, tiny_tokenizer, tmp_path, dtype,
                                                              one_torch_thread):
    """A bf16 run writes bf16 HF weights (half the bytes of its fp32 master copy) and says so in
    config.json; an fp32 run keeps fp32. The values are the policy's, rounded once."""
    import json

    from accelerate import Accelerator
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    trainer = _trainer(tiny_model_dir, tiny_tokenizer, Accelerator(cpu=True), f"model.dtype={dtype}")
    with torch.no_grad():  # a policy that is not the start: values the checkpoint must carry
        for p in trainer.unwrapped_policy().parameters():
            p.add_(0.01 * torch.randn_like(p))
    live = {k: v.detach().clone() for k, v in trainer.unwrapped_policy().state_dict().items()}
    assert all(v.dtype == torch.float32 for v in live.values())  # CPU: fp32 masters either way
    trainer.save_pretrained(tmp_path / "ck")
    want = getattr(torch, dtype)
    with safe_open(str(tmp_path / "ck" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert keys and all(f.get_slice(k).get_dtype() == {"bfloat16": "BF16", "float32": "F32"}[dtype] for k in keys)
        for k in keys:
            assert torch.equal(f.get_tensor(k), live[k].to(want)), k
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["dtype"] == dtype
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "ck")  # the dtype config.json names
    assert next(back.parameters()).dtype == want
    assert next(trainer.unwrapped_policy().parameters()).dtype == torch.float32  # the live policy is untouched


def test_fsdp_loads_a_half_checkpoint_in_half_where_prepare_upcasts(tiny_model_dir):
    """FSDP2 with mixed precision: accelerate's prepare makes fp32 masters of the trainable
    parameters, so a bf16 checkpoint is loaded in bf16 (no fp32 copy per rank before sharding);
    an fp32 checkpoint, DDP (which casts nothing) and runs without mixed precision load fp32."""
    from types import SimpleNamespace

    from vineppo.distributed import AccelerateStrategy
    from vineppo.trainer import checkpoint_dtype

    bf16, fp32 = torch.bfloat16, torch.float32

    def load(name, mixed, stored):
        return AccelerateStrategy(SimpleNamespace(mixed_precision=mixed), None, name).load_dtype(stored)

    assert load("fsdp", "bf16", bf16) == bf16
    assert load("fsdp", "fp16", torch.float16) == torch.float16
    assert load("fsdp", "bf16", fp32) == fp32 and load("fsdp", "bf16", None) == fp32
    assert load("fsdp", "no", bf16) == fp32
    assert load("ddp", "bf16", bf16) == fp32 and load("single", "bf16", bf16) == fp32
    assert checkpoint_dtype(str(tiny_model_dir)) == fp32
    assert checkpoint_dtype(str(tiny_model_dir / "missing")) is None
