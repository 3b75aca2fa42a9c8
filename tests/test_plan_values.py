"""The planner's inputs and verdict at their edges (vineppo/plan/), values by hand: the launch of
this process read from `accelerate launch`'s environment, and the Slurm stop lead at each limit."""

from __future__ import annotations

import pytest

from vineppo.plan.advice import stop_lead_seconds
from vineppo.plan.inputs import Launch, launch_from_env

LAUNCH_KEYS = ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
               "ACCELERATE_DEEPSPEED_CONFIG_FILE", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
               "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "ACCELERATE_USE_FSDP", "FSDP_VERSION",
               "FSDP_OFFLOAD_PARAMS", "FSDP_CPU_RAM_EFFICIENT_LOADING")


@pytest.fixture
def env(monkeypatch):
    for k in LAUNCH_KEYS:
        monkeypatch.delenv(k, raising=False)

    def set_(**kv):
        for k, v in kv.items():
            monkeypatch.setenv(k, v)
    return set_


def test_launch_from_a_plain_process(env):
    assert launch_from_env() == Launch("environment", "single", 1, 1, False, False)


def test_launch_from_two_nodes_of_four_with_zero3_offload(env):
    env(WORLD_SIZE="8", LOCAL_WORLD_SIZE="4", ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE="3",
        ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE="cpu", ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE="cpu")
    lau = launch_from_env()
    assert lau == Launch("environment", "zero3", 8, 2, offload_optimizer=True, offload_params=True)
    assert lau.per_node == 4 and isinstance(lau.machines, int)  # a count of machines, printed as such


def test_launch_of_one_process_per_node(env):
    env(WORLD_SIZE="4", LOCAL_WORLD_SIZE="1")
    lau = launch_from_env()
    assert (lau.machines, lau.per_node) == (4, 1)


def test_launch_from_fsdp_with_offload_and_ddp_on_one_node(env):
    env(WORLD_SIZE="2", ACCELERATE_USE_FSDP="true", FSDP_VERSION="2", FSDP_OFFLOAD_PARAMS="True")
    # no LOCAL_WORLD_SIZE: one node
    assert launch_from_env() == Launch("environment", "fsdp", 2, 1, offload_optimizer=False, offload_params=True)
    env(ACCELERATE_USE_FSDP="false", FSDP_OFFLOAD_PARAMS="false", ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE="nvme")
    assert launch_from_env() == Launch("environment", "ddp", 2, 1, offload_optimizer=False, offload_params=False)


@pytest.mark.parametrize("params, lead", [
    (1, 900), (3_000_000_000, 900), (3_000_000_001, 3600), (10_000_000_000, 3600), (10_000_000_001, 7200),
    (70_000_000_000, 7200)])
def test_stop_lead_at_each_limit(params, lead):
    assert stop_lead_seconds(params) == lead


def _plan(capacity_gib: float, critic: int = 0, suggestion: str | None = None, notes=()):
    from vineppo.plan.inputs import GIB
    from vineppo.plan.memory import Phase, Plan

    return Plan(Launch("ddp_4gpu.yaml", "ddp", 4), int(capacity_gib * GIB),
                [Phase("generate", {"weights": 2 * GIB, "kv_cache": int(1.5 * GIB), "unused": 0}),
                 Phase("train", {"weights": 2 * GIB, "grads": 4 * GIB})],
                policy_params=1_100_000_000, critic_params=critic, trainable_params=1_100_000_000,
                kv_cache_tokens=123_456, concurrent_sequences=30, host_load_per_node=int(10.5 * GIB),
                host_push_per_node=int(2.5 * GIB), host_resident_per_node=1 * GIB, max_gpu_memory_utilization=0.5,
                suggestion=suggestion, notes=list(notes))


def test_format_plan_line_by_line():
    from vineppo.plan.advice import format_plan

    # peak 6 GiB (train) of 80: 74 left, max(3, 0.04 · 80 = 3.2) needed
    assert format_plan(_plan(80, notes=["a note"])).splitlines() == [
        "ddp_4gpu.yaml: ddp, 4 process(es); policy 1,100,000,000 parameters",
        "per GPU (GiB, capacity 80.0):",
        "  generate        3.5  (weights 2.0, kv_cache 1.5)",
        "  train           6.0  (weights 2.0, grads 4.0)",
        "KV cache: 123,456 tokens, 30 concurrent full-length sequences; largest engine.gpu_memory_utilization "
        "that fits: 0.5",
        "host RAM per node (GiB): load 10.5, per push 2.5, resident 1.0",
        "note: a note",
        "verdict: fits (peak 6.0 GiB in train, 74.0 GiB left free, 3.2 needed)",
    ]
    # 5 GiB: 1 GiB over, the 3 GiB minimum needed; a critic and a suggestion
    lines = format_plan(_plan(5, critic=1000, suggestion="model.reference_offload=true")).splitlines()
    assert lines[0] == "ddp_4gpu.yaml: ddp, 4 process(es); policy 1,100,000,000 parameters, critic 1,000"
    assert lines[1] == "per GPU (GiB, capacity 5.0):"
    assert lines[-1] == ("verdict: does NOT fit (peak 6.0 GiB in train, -1.0 GiB left free, 3.0 needed); "
                         "first change that fits: model.reference_offload=true")


# ---- the engine's share at its edges -------------------------------------------------------------
def test_the_whole_gpu_is_a_valid_engine_share_and_more_is_not():
    from vineppo.plan import GIB, engine_share_shortfall

    assert engine_share_shortfall(80 * GIB, 80 * GIB, 1.0) is None  # (0, 1]: 1 is allowed
    with pytest.raises(ValueError, match=r"engine.gpu_memory_utilization must be in \(0, 1\], got 1.5"):
        engine_share_shortfall(80 * GIB, 80 * GIB, 1.5)


def test_a_largest_share_of_zero_is_no_share():
    from vineppo.plan import GIB, engine_share_shortfall

    # 80 GiB, headroom 3.2 GiB, 3.5 GiB free: floor(100 (3.5 - 3.2) / 80) / 100 = 0.0 -> nothing to offer
    msg = engine_share_shortfall(int(3.5 * GIB), 80 * GIB, 0.5)
    assert "Change: no smaller engine share leaves the headroom free; in training" in msg
    assert "engine.gpu_memory_utilization=0.0" not in msg


# ---- LoRA's trainable parameters -----------------------------------------------------------------
def test_lora_params_by_hand():
    from types import SimpleNamespace

    from vineppo.plan.inputs import ModelShape
    from vineppo.plan.memory import lora_params

    # hidden 8, 2 heads of 4 (q: 8), 1 KV head (k, v: 4), intermediate 16, 3 layers, r = 2
    shape = ModelShape(params=0, backbone_params=0, layer_params=0, hidden=8, layers=3, heads=2, kv_heads=1,
                       head_dim=4, intermediate=16, vocab=10, largest_tensor=0)

    def cfg(*targets):
        return SimpleNamespace(model=SimpleNamespace(lora=SimpleNamespace(r=2, target_modules=list(targets))))

    # r (in + out) per projection: q 2 (8 + 8) = 32, k 2 (8 + 4) = 24, v 24, o 32, gate 2 (8 + 16) = 48,
    # up 48, down 48; times 3 layers
    assert lora_params(shape, cfg("q_proj")) == 3 * 32
    assert lora_params(shape, cfg("k_proj")) == 3 * 24
    assert lora_params(shape, cfg("v_proj")) == 3 * 24
    assert lora_params(shape, cfg("o_proj")) == 3 * 32
    assert lora_params(shape, cfg("gate_proj")) == lora_params(shape, cfg("up_proj")) == 3 * 48
    assert lora_params(shape, cfg("down_proj")) == 3 * 48
    # every projection, and a module the planner does not know (lm_head) counted as none
    everything = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")
    assert lora_params(shape, cfg(*everything)) == 3 * (32 + 24 + 24 + 32 + 3 * 48)


def test_plan_json_by_hand():
    # what `vineppo plan --json` prints (launch/slurm.sbatch reads stop_lead_s from it)
    p = _plan(80, critic=1000, suggestion=None, notes=["n"])
    p.stop_lead_s = 900
    assert p.to_json() == {
        "fits": True, "peak_gib": 6.0, "capacity_gib": 80.0, "headroom_gib": 74.0, "required_headroom_gib": 3.2,
        "peak_phase": "train", "launch": "ddp_4gpu.yaml", "strategy": "ddp", "processes": 4,
        "policy_params": 1_100_000_000, "critic_params": 1000, "trainable_params": 1_100_000_000,
        "kv_cache_tokens": 123_456, "concurrent_sequences": 30,
        "host_gib_per_node": {"load": 10.5, "push": 2.5, "resident": 1.0},
        "max_gpu_memory_utilization": 0.5, "suggestion": None, "nccl_communicators": 1, "stop_lead_s": 900,
        "phases": {"generate": {"total_gib": 3.5, "weights": 2.0, "kv_cache": 1.5, "unused": 0.0},
                   "train": {"total_gib": 6.0, "weights": 2.0, "grads": 4.0}},
        "notes": ["n"]}


@pytest.mark.parametrize("bf16, width", [(True, 2), (False, 4)])
def test_fsdp_unsharded_bytes_by_hand(bf16, width):
    from vineppo.plan.inputs import ModelShape
    from vineppo.plan.memory import _fsdp_unsharded

    # 1000 parameters, 4 layers of 200: the root (embeddings, norm, head) is 200; it and two layers
    # (the current one and the prefetched one) are unsharded: 600 parameters of `width` bytes
    shape = ModelShape(params=1000, backbone_params=900, layer_params=200, hidden=8, layers=4, heads=2, kv_heads=2,
                       head_dim=4, intermediate=16, vocab=10, largest_tensor=80)
    assert _fsdp_unsharded(shape, bf16) == width * 600


def test_launch_files_default_to_the_repositorys(tmp_path):
    from pathlib import Path

    from vineppo.plan.inputs import launch_files

    repo = Path(__file__).resolve().parents[1] / "launch"
    assert launch_files() == sorted(repo.glob("*.yaml")) and len(launch_files()) > 3
    (tmp_path / "b.yaml").write_text("num_processes: 2\n")
    (tmp_path / "a.yaml").write_text("num_processes: 1\n")
    (tmp_path / "notes.txt").write_text("")
    assert launch_files(tmp_path) == [tmp_path / "a.yaml", tmp_path / "b.yaml"]


def _small_shape():
    from vineppo.plan.inputs import ModelShape

    return ModelShape(params=10_000, backbone_params=9_000, layer_params=2_000, hidden=16, layers=4, heads=2,
                      kv_heads=1, head_dim=8, intermediate=32, vocab=100, largest_tensor=1_600)


def _phases(cfg, launch=Launch("x.yaml", "ddp", 2)):
    from vineppo.plan.inputs import GIB
    from vineppo.plan.memory import plan_memory

    p = plan_memory(_small_shape(), cfg, launch, 80 * GIB)
    return p, {ph.name: ph.parts for ph in p.phases}


@pytest.mark.parametrize("dtype, width", [("bfloat16", 2), ("float16", 2), ("float32", 4)])
def test_activations_logits_and_reference_take_the_dtypes_width(dtype, width):
    from vineppo.config import TrainConfig
    from vineppo.plan.memory import logits_peak_bytes

    cfg = TrainConfig()
    cfg.model.dtype = dtype
    cfg.model.reference_offload = False
    cfg.ppo.micro_batch_size, cfg.sampling.max_sequence_length = 2, 50
    _, parts = _phases(cfg)
    # the (B, L, V) logits at `width` bytes: 3 full copies and one fp32 chunk (x2 fp32, x3 narrower)
    assert parts["train"]["logits"] == logits_peak_bytes(_small_shape(), 2, 50, width)
    assert parts["train"]["logits"] == 3 * 2 * 50 * 100 * width + 2 * 50 * 100 * 4 * (2 if width == 4 else 3)
    assert parts["rollout"]["reference"] == width * 10_000  # the frozen reference in the same dtype


def test_lora_trains_its_adapters_only_and_keeps_no_reference_copy():
    from vineppo.config import LoraConfig, TrainConfig
    from vineppo.plan.memory import lora_params

    cfg = TrainConfig()
    cfg.model.lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    cfg.model.reference_offload = True  # nothing to offload either: the reference is the adapter off
    plan, parts = _phases(cfg)
    assert plan.trainable_params == lora_params(_small_shape(), cfg) == 4 * 4 * ((16 + 16) + (16 + 8))
    assert "reference" not in parts["rollout"] and "reference" not in parts["logprobs"]
    cfg.model.lora = None
    assert _phases(cfg)[0].trainable_params == 10_000


def test_an_unknown_strategy_is_named():
    from vineppo.config import TrainConfig
    from vineppo.plan.inputs import PlanError

    with pytest.raises(PlanError, match="unknown strategy 'zero1'"):
        _phases(TrainConfig(), Launch("x.yaml", "zero1", 2))


@pytest.mark.parametrize("dtype, width", [("bfloat16", 2), ("float32", 4)])
def test_fsdp_critic_unshards_its_backbone_only(dtype, width):
    from vineppo.config import TrainConfig
    from vineppo.plan.memory import _fsdp_unsharded

    cfg = TrainConfig()
    cfg.algorithm, cfg.model.dtype = "ppo", dtype
    _, parts = _phases(cfg, Launch("fsdp.yaml", "fsdp", 2))
    policy = _fsdp_unsharded(_small_shape(), dtype == "bfloat16")
    # the policy: root 10000 - 4 x 2000 = 2000 and two layers: 6000 parameters; the critic has no
    # LM head (params - backbone = 1000 fewer)
    assert parts["train"]["policy_unsharded_params"] == policy == width * 6_000
    assert parts["train_critic"]["critic_unsharded_params"] == width * 5_000


@pytest.mark.parametrize("algorithm, names", [("vineppo", ["rollout", "mc", "logprobs", "train"]),
                                              ("ppo", ["rollout", "logprobs", "train", "train_critic"]),
                                              ("grpo", ["rollout", "logprobs", "train"])])
def test_phases_and_what_each_holds(algorithm, names):
    from vineppo.config import TrainConfig
    from vineppo.plan.inputs import GIB
    from vineppo.plan.memory import (ENGINE_ASLEEP_BYTES, TRAINER_CONTEXT_BYTES, activation_bytes,
                                     logprob_pass_bytes, model_states, nccl_bytes)

    cfg = TrainConfig()
    cfg.algorithm = algorithm
    cfg.model.dtype, cfg.model.reference_offload = "bfloat16", False
    cfg.engine.gpu_memory_utilization, cfg.engine.sleep_during_training = 0.25, False
    cfg.ppo.micro_batch_size, cfg.sampling.max_sequence_length = 2, 50
    cfg.model.gradient_checkpointing, cfg.model.attn_implementation = False, None
    launch = Launch("x.yaml", "ddp", 2)
    plan, parts = _phases(cfg, launch)
    assert [p.name for p in plan.phases] == names
    shape = _small_shape()
    policy = model_states(10_000, 10_000, launch, True, 0)
    resident = {**{f"policy_{k}": v for k, v in policy["resident"].items()}, "reference": 2 * 10_000,
                "cuda_context": TRAINER_CONTEXT_BYTES, "nccl": nccl_bytes(launch)}
    if algorithm == "ppo":
        critic = model_states(shape.critic_params, shape.critic_params, launch, True, -2 * 1_000)
        resident.update({f"critic_{k}": v for k, v in critic["resident"].items()})
    engine = int(0.25 * 80 * GIB)
    assert parts["rollout"] == {**resident, "engine": engine}
    if algorithm == "vineppo":
        assert parts["mc"] == parts["rollout"]
    # the engine stays awake beside the trainer (sleep_during_training false): its whole share
    assert parts["logprobs"] == {**resident, "engine_awake": engine, "forward": logprob_pass_bytes(shape, 2, 50, 2)}
    assert parts["train"]["engine_awake"] == engine
    assert parts["train"]["activations"] == activation_bytes(shape, 2, 50, 2, False, None)
    if algorithm == "ppo":
        # the critic's step: its own step state, beside the policy's gradients kept until its step
        assert parts["train_critic"] == {**resident, "engine_awake": engine,
                                         **{f"critic_{k}": v for k, v in critic["step"].items()},
                                         "policy_grads": 4 * 10_000, "activations": parts["train"]["activations"]}
        z2 = Launch("z.yaml", "zero2", 2)  # ZeRO-2: the policy's gradients are its fp32 shard, 4 x 10000 / 2
        assert _phases(cfg, z2)[1]["train_critic"]["policy_grads"] == 20_000
    # host RAM per node (2 processes): fp32 weights at load, the policy and its reference copy (and the critic)
    assert plan.host_load_per_node == 2 * (4 * 10_000 * 2 + (4 * shape.critic_params if algorithm == "ppo" else 0))
    assert (plan.host_push_per_node, plan.host_resident_per_node) == (0, 0)
    assert plan.trainable_params == 10_000 and plan.policy_params == 10_000
    assert plan.critic_params == (shape.critic_params if algorithm == "ppo" else 0)
    assert plan.notes == []
    # asleep: the engine keeps 1 GiB
    cfg.engine.sleep_during_training = True
    _, parts = _phases(cfg, launch)
    assert parts["logprobs"]["engine_asleep"] == ENGINE_ASLEEP_BYTES and "engine_awake" not in parts["logprobs"]
    # the reference offloaded: not resident, on the GPU only for its log-probs
    cfg.model.reference_offload = True
    _, parts = _phases(cfg, launch)
    assert "reference" not in parts["rollout"] and parts["logprobs"]["reference"] == 2 * 10_000


def test_activations_follow_checkpointing_and_the_attention_kernel():
    from vineppo.config import TrainConfig
    from vineppo.plan.memory import activation_bytes

    cfg = TrainConfig()
    cfg.ppo.micro_batch_size, cfg.sampling.max_sequence_length = 2, 50
    seen = set()
    for ckpt in (False, True):
        for attn in (None, "eager", "sdpa"):
            cfg.model.gradient_checkpointing, cfg.model.attn_implementation = ckpt, attn
            got = _phases(cfg)[1]["train"]["activations"]
            assert got == activation_bytes(_small_shape(), 2, 50, 2, ckpt, attn)
            seen.add(got)
    assert len(seen) >= 3  # checkpointing and eager attention each change the bytes


def test_host_ram_per_node_by_hand():
    from vineppo.config import TrainConfig

    cfg = TrainConfig()
    cfg.model.dtype, cfg.model.reference_offload = "bfloat16", True
    cfg.engine.sleep_during_training, cfg.engine.sleep_level = True, 1
    # ZeRO-3, 4 processes on 2 machines (2 per node), optimizer offloaded: weights read in bf16 (2
    # bytes, policy + reference copy), one gathered bf16 tensor per push, and resident: the fp32
    # master and Adam shards (12 x 10000 / 4), the grad shard (4 x 10000 / 4), the engine's
    # weights asleep at level 1 (2 x 10000) and the offloaded bf16 reference (2 x 10000)
    z3 = Launch("z3.yaml", "zero3", 4, 2, offload_optimizer=True)
    plan, _ = _phases(cfg, z3)
    assert plan.host_load_per_node == 2 * (2 * 10_000 * 2)
    assert plan.host_push_per_node == 2 * (2 * 1_600)
    assert plan.host_resident_per_node == 2 * (12 * 10_000 // 4 + 4 * 10_000 // 4 + 2 * 10_000 + 2 * 10_000)
    assert plan.notes == ["engine.sleep_level=2 saves the engine's CPU copy of the weights (0.0 GiB per node): "
                          "the trainer pushes fresh weights anyway"]
    # ZeRO-2 loads in bf16 too but pushes whole tensors from the unsharded weights: no gather buffer;
    # at sleep level 2 the engine keeps no weights on the host
    cfg.engine.sleep_level = 2
    plan, _ = _phases(cfg, Launch("z2.yaml", "zero2", 2))
    assert (plan.host_load_per_node, plan.host_push_per_node) == (2 * (2 * 10_000 * 2), 0)
    assert plan.host_resident_per_node == 2 * (2 * 10_000)  # the offloaded reference only
    assert plan.notes == []
    # not asleep: level 1 keeps nothing either
    cfg.engine.sleep_during_training, cfg.engine.sleep_level = False, 1
    plan, _ = _phases(cfg, Launch("z2.yaml", "zero2", 2))
    assert plan.host_resident_per_node == 2 * (2 * 10_000) and plan.notes == []
    cfg.engine.sleep_during_training, cfg.engine.sleep_level = True, 2
    # FSDP reads fp32 and gathers one bf16 tensor per push
    plan, _ = _phases(cfg, Launch("f.yaml", "fsdp", 2))
    assert (plan.host_load_per_node, plan.host_push_per_node) == (2 * (4 * 10_000 * 2), 2 * (2 * 1_600))


def test_a_micro_batch_that_does_not_divide_the_per_process_minibatch_is_noted():
    from vineppo.config import TrainConfig

    cfg = TrainConfig()
    cfg.ppo.minibatch_size, cfg.ppo.micro_batch_size = 64, 12
    cfg.engine.sleep_during_training = False
    assert _phases(cfg)[0].notes == ["ppo.micro_batch_size 12 does not divide the per-process minibatch 32 "
                                     "under 2 processes"]
    cfg.ppo.micro_batch_size = 16
    assert _phases(cfg)[0].notes == []
    assert _phases(cfg, Launch("s.yaml", "single", 1))[0].notes == []


def test_model_states_of_a_lora_model_under_ddp():
    from vineppo.plan.memory import model_states

    # 10000 parameters of which 500 are trained (LoRA): fp32 trained weights, the frozen base in
    # bf16, Adam and DDP buckets of the trained ones only, no bf16 autocast copy
    assert model_states(10_000, 500, Launch("d.yaml", "ddp", 2), True) == {
        "resident": {"weights": 4 * 500 + 2 * 9_500, "adam": 8 * 500, "ddp_buckets": 4 * 500},
        "step": {"grads": 4 * 500}, "host": {}}
    # the full model: fp32 weights, and the bf16 cast autocast keeps for backward
    assert model_states(10_000, 10_000, Launch("d.yaml", "ddp", 2), True)["step"] == {
        "grads": 40_000, "autocast_bf16_weights": 20_000}
    # FSDP without an unsharded size: nothing unsharded
    assert model_states(10_000, 10_000, Launch("f.yaml", "fsdp", 2), True)["step"]["unsharded_params"] == 0


def _share_case(capacity_gib=100, cap_bytes=None, max_len=2):
    from vineppo.config import TrainConfig
    from vineppo.plan.inputs import ModelShape

    # a shape whose KV cache costs 2 x 1 layer x 1 head x 1 dim x 2 bytes = 4 bytes per token
    shape = ModelShape(params=1_000, backbone_params=900, layer_params=100, hidden=4, layers=1, heads=1,
                       kv_heads=1, head_dim=1, intermediate=8, vocab=10, largest_tensor=40)
    cfg = TrainConfig()
    cfg.engine.kv_cache_memory_bytes = cap_bytes
    cfg.sampling.max_sequence_length = max_len
    return shape, cfg


def test_max_share_by_hand():
    from vineppo.plan.inputs import GIB
    from vineppo.plan.memory import Phase, max_share

    shape, cfg = _share_case()
    cap = 100 * GIB  # headroom max(3, 4) = 4 GiB: the limit is 96 GiB
    fine = [Phase("train", {"x": 10 * GIB})]
    # 46 GiB outside the engine: floor(100 (96 - 46) / 100) / 100 = 0.5
    assert max_share(shape, cfg, cap, 46 * GIB, fine) == 0.5
    # nothing outside the engine: 0.96, capped at 0.95
    assert max_share(shape, cfg, cap, 0, fine) == 0.95
    # another phase over the limit: no share helps; exactly at the limit: it fits
    assert max_share(shape, cfg, cap, 46 * GIB, [Phase("train", {"x": 96 * GIB + 1})]) is None
    assert max_share(shape, cfg, cap, 46 * GIB, [Phase("train", {"x": 96 * GIB})]) == 0.5
    # the rollout and MC phases hold the engine itself: not counted
    big = [Phase("rollout", {"x": 200 * GIB}), Phase("mc", {"x": 200 * GIB})] + fine
    assert max_share(shape, cfg, cap, 46 * GIB, big) == 0.5
    # no room at all for the engine
    assert max_share(shape, cfg, cap, 96 * GIB, fine) is None


@pytest.mark.parametrize("cap_bytes, expect", [(0, None), (4, 0.5), (8, 0.5)])
def test_max_share_needs_a_kv_cache_token_not_a_whole_sequence(cap_bytes, expect):
    from vineppo.plan.inputs import GIB
    from vineppo.plan.memory import Phase, engine_split, max_share

    # kv_cache_memory_bytes caps the KV cache: 0 bytes -> no token (None); 4 bytes -> one token,
    # fewer than one 2-token sequence, still a share; 8 bytes -> 2 tokens, one sequence
    shape, cfg = _share_case(cap_bytes=cap_bytes)
    assert engine_split(shape, cfg, 100 * GIB, 0.5) == (cap_bytes // 4, cap_bytes // 8)
    assert max_share(shape, cfg, 100 * GIB, 46 * GIB, [Phase("train", {"x": GIB})]) == expect


# 10001 parameters, all trained, over 3 processes: every shard is a floor division (4 x 10001 / 3 =
# 13334.67 -> 13334 bytes)
P = 10_001


def test_model_states_under_fsdp():
    from vineppo.plan.memory import model_states

    fsdp = Launch("f.yaml", "fsdp", 3)
    assert model_states(P, P, fsdp, True, 77) == {
        "resident": {"weights": 4 * P // 3, "adam": 8 * P // 3}, "step": {"grads": 4 * P // 3, "unsharded_params": 77},
        "host": {}}
    off = Launch("f.yaml", "fsdp", 3, offload_params=True)
    assert model_states(P, P, off, True, 77)["host"] == {"weights": 4 * P // 3}
    assert "weights" not in model_states(P, P, off, True, 77)["resident"]


@pytest.mark.parametrize("bf16, wb", [(True, 2), (False, 4)])
def test_model_states_under_zero(bf16, wb):
    from vineppo.plan.memory import DEEPSPEED_BUCKET_BYTES, ZERO3_LIVE_PARAMS, model_states

    z2 = model_states(P, P, Launch("z.yaml", "zero2", 3), bf16)
    assert z2 == {"resident": {"weights": wb * P, "fp32_master": 4 * P // 3, "adam": 8 * P // 3,
                               "grad_shard": wb * P // 3},
                  "step": {"fp32_grad_shard": 4 * P // 3, "deepspeed_buckets": DEEPSPEED_BUCKET_BYTES}, "host": {}}
    assert all(type(v) is int for part in z2.values() for v in part.values())
    z3 = model_states(P, P, Launch("z.yaml", "zero3", 3), bf16)
    assert z3["resident"]["weights"] == wb * P // 3 and type(z3["resident"]["weights"]) is int
    assert z3["step"]["gathered_params"] == wb * min(ZERO3_LIVE_PARAMS, P)
    # offloading: the optimizer's fp32 state and grads go to the host; parameters only under ZeRO-3
    both = dict(offload_optimizer=True, offload_params=True)
    z3o = model_states(P, P, Launch("z.yaml", "zero3", 3, **both), bf16)
    assert z3o["host"] == {"weights": wb * P // 3, "fp32_master": 4 * P // 3, "adam": 8 * P // 3,
                           "fp32_grad_shard": 4 * P // 3}
    assert z3o["resident"] == {"grad_shard": wb * P // 3}
    z2o = model_states(P, P, Launch("z.yaml", "zero2", 3, **both), bf16)
    assert z2o["resident"] == {"weights": wb * P, "grad_shard": wb * P // 3}  # ZeRO-2 keeps its weights


def test_one_token_sequences_and_nvls_from_three_processes_per_node():
    from vineppo.plan.memory import NCCL_COMM_BYTES, NVLS_COMM_BYTES, engine_split, nccl_bytes, nccl_communicators
    from vineppo.plan.inputs import GIB

    shape, cfg = _share_case(cap_bytes=8, max_len=1)  # 2 tokens: two 1-token sequences
    assert engine_split(shape, cfg, 100 * GIB, 0.5) == (2, 2)
    # NVLS buffers once more than 2 processes share a node
    for per_node, nvls in ((2, 0), (3, NVLS_COMM_BYTES)):
        lau = Launch("d.yaml", "ddp", per_node)
        assert nccl_bytes(lau) == nccl_communicators(lau) * (NCCL_COMM_BYTES + nvls) > 0


def test_read_launch_defaults_and_errors(tmp_path):
    from vineppo.plan.inputs import PlanError, read_launch

    def launch(name, text):
        (tmp_path / name).write_text(text)
        return read_launch(tmp_path / name)

    # accelerate's defaults: no distribution, one process on one machine
    assert launch("empty.yaml", "") == Launch("empty.yaml", "single", 1, 1)
    assert launch("two.yaml", "distributed_type: MULTI_GPU\nnum_processes: 8\nnum_machines: 2\n") == Launch(
        "two.yaml", "ddp", 8, 2)
    assert launch("pair.yaml", "distributed_type: MULTI_GPU\nnum_processes: 2\n").strategy == "ddp"
    # DeepSpeed without a stage: ZeRO-2, nothing offloaded
    assert launch("ds.yaml", "distributed_type: DEEPSPEED\nnum_processes: 4\n") == Launch("ds.yaml", "zero2", 4, 1)
    with pytest.raises(PlanError, match=r"list.yaml: not an accelerate launch file \(top level must be a mapping\)"):
        launch("list.yaml", "- a\n- b\n")
    with pytest.raises(PlanError, match=r"z1.yaml: zero_stage 1 is not supported \(2 or 3\)"):
        launch("z1.yaml", "distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 1\n")


def test_read_launch_offload_and_machines(tmp_path):
    from vineppo.plan.inputs import read_launch

    def launch(name, text):
        (tmp_path / name).write_text(text)
        return read_launch(tmp_path / name)

    z3 = ("distributed_type: DEEPSPEED\nnum_processes: 16\nnum_machines: 2\ndeepspeed_config:\n  zero_stage: 3\n"
          "  offload_optimizer_device: cpu\n  offload_param_device: cpu\n")
    assert launch("z3.yaml", z3) == Launch("z3.yaml", "zero3", 16, 2, offload_optimizer=True, offload_params=True)
    assert launch("z3p.yaml", z3.replace("  offload_optimizer_device: cpu\n", "")) == Launch(
        "z3p.yaml", "zero3", 16, 2, offload_optimizer=False, offload_params=True)
    fsdp = "distributed_type: FSDP\nnum_processes: 16\nnum_machines: 2\nfsdp_config:\n  fsdp_offload_params: true\n"
    assert launch("f.yaml", fsdp) == Launch("f.yaml", "fsdp", 16, 2, offload_params=True)
    assert launch("f0.yaml", fsdp.replace("  fsdp_offload_params: true\n", "  fsdp_version: 2\n")) == Launch(
        "f0.yaml", "fsdp", 16, 2, offload_params=False)


def test_shape_from_config_by_hand():
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig

    from vineppo.plan.inputs import ModelShape, PlanError, shape_from_config

    # one Llama layer, hidden 32, 4 heads of 16 (not 32 / 4 = 8), 2 KV heads, MLP 64, vocabulary 50:
    # q 32x64 = 2048, k and v 32x32 = 1024 each, o 2048, gate / up / down 2048 each, 2 norms of 32
    llama = LlamaConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                        num_hidden_layers=1, intermediate_size=64, vocab_size=50, tie_word_embeddings=False)
    layer = 2048 + 2 * 1024 + 2048 + 3 * 2048 + 2 * 32
    assert shape_from_config(llama) == ModelShape(
        params=50 * 32 + layer + 32 + 50 * 32, backbone_params=50 * 32 + layer + 32, layer_params=layer, hidden=32,
        layers=1, heads=4, kv_heads=2, head_dim=16, intermediate=64, vocab=50, largest_tensor=2048)
    # a config with neither num_key_value_heads nor head_dim: every head has its KV, of hidden / heads
    neox = shape_from_config(GPTNeoXConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
                                           intermediate_size=64, vocab_size=50))
    assert (neox.layers, neox.heads, neox.kv_heads, neox.head_dim) == (2, 4, 4, 8)
    # GPT-2 keeps its blocks in `h`, not `layers`: named, not guessed
    with pytest.raises(PlanError, match=r"^GPT2LMHeadModel: no decoder layers found \(the planner knows "
                                        r"decoder-only LMs\)$"):
        shape_from_config(GPT2Config(n_embd=32, n_head=4, n_layer=2, vocab_size=50, bos_token_id=0, eos_token_id=0))


def test_activation_bytes_by_hand():
    from vineppo.plan.memory import activation_bytes, layer_activation_bytes_per_token

    s = _small_shape()  # hidden 16, MLP 32, 2 heads of 8, 1 KV head, 4 layers; bf16; 2 x 5 tokens
    # per token: norms 2 (16 x 2 + 16 x 4) = 192, attention (2 x 16 + 4 x 8 + 2 x 16) x 2 = 192, MLP 4 x 32 x 2 = 256
    assert layer_activation_bytes_per_token(s, 2, None) == 640
    # a layer: 10 tokens x 640 = 6400; eager attention adds 2 x 2 heads x 5 x 5 x 2 bytes x 2 = 400;
    # backward's working set 10 x (2 x 32 + 2 x 16) x 2 = 1920
    assert activation_bytes(s, 2, 5, 2, False, "sdpa") == 4 * 6400 + 1920
    assert activation_bytes(s, 2, 5, 2, False, "eager") == 4 * 6800 + 1920
    # checkpointing: every layer's input (4 x 10 x 16 x 2 = 1280) and one layer in full
    assert activation_bytes(s, 2, 5, 2, True, None) == 1280 + 6400 + 1920
    assert activation_bytes(s, 2, 5, 2, True, "eager") == 1280 + 6800 + 1920


def test_an_unknown_distribution_is_named_and_head_dims_are_ints(tmp_path):
    from transformers import GPTNeoXConfig

    from vineppo.plan.inputs import PlanError, read_launch, shape_from_config

    (tmp_path / "tpu.yaml").write_text("distributed_type: TPU\n")
    with pytest.raises(PlanError, match=r"tpu.yaml: distributed_type TPU is not one vineppo runs \(NO, MULTI_GPU, "
                                        r"FSDP, DEEPSPEED\)"):
        read_launch(tmp_path / "tpu.yaml")
    neox = shape_from_config(GPTNeoXConfig(hidden_size=32, num_attention_heads=4, num_hidden_layers=1,
                                           intermediate_size=64, vocab_size=50))
    assert type(neox.head_dim) is int


def test_lora_in_fp32_and_its_load():
    from vineppo.config import LoraConfig, TrainConfig
    from vineppo.plan.memory import model_states

    # fp32 LoRA: trained and frozen weights both 4 bytes
    assert model_states(10_000, 500, Launch("d.yaml", "ddp", 2), False)["resident"]["weights"] == 4 * 10_000
    cfg = TrainConfig()
    cfg.model.lora, cfg.model.dtype = LoraConfig(r=2), "float32"
    # no reference copy at load: fp32 weights of the policy once, per process (2 per node)
    assert _phases(cfg)[0].host_load_per_node == 2 * (4 * 10_000)


def test_the_critic_trains_with_the_policys_checkpointing_and_attention():
    from vineppo.config import TrainConfig
    from vineppo.plan.memory import activation_bytes

    cfg = TrainConfig()
    cfg.algorithm = "ppo"
    cfg.ppo.micro_batch_size, cfg.sampling.max_sequence_length = 2, 50
    cfg.model.gradient_checkpointing, cfg.model.attn_implementation = True, "eager"
    assert _phases(cfg)[1]["train_critic"]["activations"] == activation_bytes(_small_shape(), 2, 50, 2, True, "eager")


def test_notes_of_a_big_model_asleep_and_of_a_small_kv_cache():
    from vineppo.config import TrainConfig
    from vineppo.plan.inputs import GIB, ModelShape
    from vineppo.plan.memory import plan_memory

    cfg = TrainConfig()
    cfg.engine.sleep_during_training, cfg.engine.sleep_level = True, 1
    big = ModelShape(params=2**30, backbone_params=2**30 - 1000, layer_params=1000, hidden=16, layers=4, heads=2,
                     kv_heads=1, head_dim=8, intermediate=32, vocab=100, largest_tensor=1600)
    # 2 bytes x 2^30 parameters x 2 processes per node = 4.0 GiB
    notes = plan_memory(big, cfg, Launch("x.yaml", "ddp", 2), 80 * GIB).notes
    assert notes[0] == ("engine.sleep_level=2 saves the engine's CPU copy of the weights (4.0 GiB per node): the "
                        "trainer pushes fresh weights anyway")
    # a KV cache of 128-byte tokens (4 layers x 1 KV head x 8 x 2 x 2) and 50-token sequences
    cfg = TrainConfig()
    cfg.engine.sleep_during_training = False
    cfg.sampling.max_sequence_length = 50
    for cap, note in ((128 * 50 * 8, None), (128 * 50 * 7, 7), (128, 0), (0, None)):
        cfg.engine.kv_cache_memory_bytes = cap
        expect = [] if note is None else [f"the KV cache holds {note} full-length sequences at once: generation "
                                          "will be slow"]
        assert _phases(cfg, Launch("s.yaml", "single", 1))[0].notes == expect, cap
    # one process: no per-process minibatch to divide
    cfg.ppo.minibatch_size, cfg.ppo.micro_batch_size, cfg.engine.kv_cache_memory_bytes = 64, 12, None
    assert _phases(cfg, Launch("s.yaml", "single", 1))[0].notes == []
