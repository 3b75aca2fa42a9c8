"""Bytes per GPU of each phase of a run: a pure function of shapes, config and launch strategy
(see the package docstring for what is modelled)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vineppo.plan.inputs import GIB, STRATEGIES, Launch, ModelShape, PlanError

#: per process, outside torch's allocator: CUDA context, cuBLAS / cuDNN workspaces (estimate)
TRAINER_CONTEXT_BYTES = 1 * GIB
#: NCCL's buffers for one communicator on one GPU after its first collective (estimate). The one
#: public measurement found: 688 MB per GPU for a 3- or 4-GPU group of A100s over NVLink, 544 MB for
#: 2 GPUs (NVIDIA/nccl issue 964, torch front end, a 4 MB all-reduce). The size grows with NCCL's
#: channels (more on H100 NVLink 4, fewer over PCIe) and with the peers of each channel.
NCCL_COMM_BYTES = int(0.7 * GIB)
#: NVLink SHARP (NVLS) buffers NCCL adds to a communicator of more than 2 GPUs on an NVSwitch H100 /
#: H200 node: `nvlsPerRankSize 301989888` (288 MiB) per GPU in NCCL's log on 8 H200s (vllm-project/
#: vllm issue 9699); `NCCL_NVLS_ENABLE=0` turns them off. The plan does not know the GPU model, so it
#: counts them whenever more than 2 processes share a node.
NVLS_COMM_BYTES = 288 * 2**20
#: free memory every GPU must keep at the peak for a plan to fit: max(3 GiB, 4 % of the GPU). It
#: absorbs what the plan does not model: the caching allocator's fragmentation, CUDA graphs that
#: vLLM before 0.20 captures outside its budget (`ENGINE_GRAPHS_BYTES`, by reading vLLM 0.16 / 0.18),
#: NCCL beyond the terms above (more channels, multi-node network buffers), kernels' workspaces.
HEADROOM_MIN_BYTES = 3 * GIB
HEADROOM_FRACTION = 0.04
#: plan parts that live outside torch's caching allocator (not in `torch.cuda.max_memory_allocated`)
NOT_ALLOCATOR_PARTS = ("cuda_context", "nccl", "engine_asleep")
#: the sleeping engine keeps its process's CUDA context and its CUDA-graph pool (estimate)
ENGINE_ASLEEP_BYTES = 1 * GIB
#: vLLM's non-KV overhead inside its budget besides weights and activations: CUDA graphs (estimate)
ENGINE_GRAPHS_BYTES = GIB // 2
#: vLLM's profiled forward batch (`max_num_batched_tokens` default of the LLM class on 80 GB GPUs)
ENGINE_BATCHED_TOKENS = 16384
#: DeepSpeed ZeRO reduce / all-gather buckets (its defaults: 5e8 elements each, bf16)
DEEPSPEED_BUCKET_BYTES = 2 * int(5e8) * 2
#: DeepSpeed ZeRO-3 `stage3_max_live_parameters` default (elements gathered at once)
ZERO3_LIVE_PARAMS = int(1e9)
#: positions per chunk of `vineppo.losses.logprobs_from_logits`
LOGPROB_CHUNK = 256
#: a memory share is worth suggesting only if the KV cache holds this many full-length sequences
MIN_CONCURRENT_SEQUENCES = 8


# ---- the plan -----------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


@dataclass
class Plan:
    launch: Launch
    capacity: int
    phases: list[Phase]
    policy_params: int
    critic_params: int
    trainable_params: int
    kv_cache_tokens: int
    concurrent_sequences: int
    host_load_per_node: int
    host_push_per_node: int
    host_resident_per_node: int
    max_gpu_memory_utilization: float | None
    suggestion: str | None = None
    notes: list[str] = field(default_factory=list)
    #: seconds before a Slurm time limit to ask training to stop (`vineppo.plan.stop_lead_seconds`)
    stop_lead_s: int | None = None

    @property
    def peak(self) -> int:
        return max(p.total for p in self.phases)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda p: p.total).name

    @property
    def headroom(self) -> int:
        """Bytes left free on the GPU at the peak (negative: over the capacity)."""
        return self.capacity - self.peak

    @property
    def required_headroom(self) -> int:
        return required_headroom(self.capacity)

    @property
    def fits(self) -> bool:
        """The peak leaves the required headroom free and the engine's share leaves a KV cache."""
        return self.headroom >= self.required_headroom and self.kv_cache_tokens > 0

    def to_json(self) -> dict:
        g = lambda b: round(b / GIB, 2)  # noqa: E731
        return {
            "fits": self.fits, "peak_gib": g(self.peak), "capacity_gib": g(self.capacity),
            "headroom_gib": g(self.headroom), "required_headroom_gib": g(self.required_headroom),
            "peak_phase": self.peak_phase, "launch": self.launch.name, "strategy": self.launch.strategy,
            "processes": self.launch.processes, "policy_params": self.policy_params,
            "critic_params": self.critic_params, "trainable_params": self.trainable_params,
            "kv_cache_tokens": self.kv_cache_tokens, "concurrent_sequences": self.concurrent_sequences,
            "host_gib_per_node": {"load": g(self.host_load_per_node), "push": g(self.host_push_per_node),
                                  "resident": g(self.host_resident_per_node)},
            "max_gpu_memory_utilization": self.max_gpu_memory_utilization,
            "suggestion": self.suggestion, "nccl_communicators": nccl_communicators(self.launch),
            "stop_lead_s": self.stop_lead_s,
            "phases": {p.name: {"total_gib": g(p.total), **{k: g(v) for k, v in p.parts.items()}}
                       for p in self.phases},
            "notes": self.notes,
        }


def required_headroom(capacity: int) -> int:
    """Bytes a plan must leave free on a GPU of `capacity` bytes: max(3 GiB, 4 % of it)."""
    return max(HEADROOM_MIN_BYTES, int(HEADROOM_FRACTION * capacity))


def nccl_communicators(launch: Launch) -> int:
    """World-size NCCL communicators each process of `launch` holds on its GPU:

    - single: none (one process, no process group);
    - DDP, FSDP2: one, the default process group (DDP's gradient all-reduce; FSDP2's one-dimensional
      device mesh over the whole world is that group; accelerate's gathers of metrics share it);
    - ZeRO-2 / ZeRO-3: two, the default group and DeepSpeed's clone of the world group
      (`deepspeed.utils.groups._clone_world_group`, made once and shared by the policy's and the
      critic's DeepSpeed engines; vineppo.distributed gives it the run's timeout).

    The vLLM engines (one per process, tensor_parallel_size 1) open none: vLLM's world group has no
    device communicator and its tensor-parallel groups have one member each."""
    if launch.processes <= 1:
        return 0
    return 2 if launch.strategy in ("zero2", "zero3") else 1


def nccl_bytes(launch: Launch) -> int:
    """NCCL buffers per GPU: `NCCL_COMM_BYTES` per communicator, plus `NVLS_COMM_BYTES` each when
    more than 2 processes share a node (NVLS on H100 / H200)."""
    per_comm = NCCL_COMM_BYTES + (NVLS_COMM_BYTES if launch.per_node > 2 else 0)
    return nccl_communicators(launch) * per_comm


def lora_params(shape: ModelShape, cfg) -> int:
    """Trainable LoRA parameters: r × (in + out) per targeted projection per layer."""
    lo = cfg.model.lora
    kv = shape.kv_heads * shape.head_dim
    q = shape.heads * shape.head_dim
    dims = {"q_proj": (shape.hidden, q), "k_proj": (shape.hidden, kv), "v_proj": (shape.hidden, kv),
            "o_proj": (q, shape.hidden), "gate_proj": (shape.hidden, shape.intermediate),
            "up_proj": (shape.hidden, shape.intermediate), "down_proj": (shape.intermediate, shape.hidden)}
    return shape.layers * sum(lo.r * sum(dims[t]) for t in lo.target_modules if t in dims)


def model_states(params: int, trainable: int, launch: Launch, bf16: bool,
                 fsdp_unsharded: int = 0) -> dict[str, dict[str, int]]:
    """Bytes per GPU of one trained model between steps ("resident") and added during a step
    ("step"), and on the host, for the strategy:

    - single / DDP: fp32 weights (accelerate autocasts), fp32 grads, fp32 Adam m and v; DDP keeps
      gradient buckets the size of the grads (accelerate's `gradient_as_bucket_view=False`);
      under autocast each weight's bf16 cast is kept for backward (2 bytes / parameter).
    - FSDP2: fp32 shards of weights, grads and Adam (1/N each); the bf16 unsharded root module
      (embeddings, LM head) and two decoder layers during forward/backward.
    - ZeRO-2: bf16 module weights, fp32 master and Adam shards, a bf16 grad shard + its fp32 copy
      at the step, DeepSpeed's buckets; offload_optimizer puts master, Adam and fp32 grads on host.
    - ZeRO-3: bf16 weights sharded too, at most `stage3_max_live_parameters` gathered at once.
    """
    n = launch.processes
    s = launch.strategy
    lora = trainable < params
    res: dict[str, int] = {}
    step: dict[str, int] = {}
    host: dict[str, int] = {}
    if s in ("single", "ddp"):
        res["weights"] = 4 * params if not lora else 4 * trainable + (2 if bf16 else 4) * (params - trainable)
        res["adam"] = 8 * trainable
        if s == "ddp":
            res["ddp_buckets"] = 4 * trainable
        step["grads"] = 4 * trainable
        if bf16 and not lora:
            step["autocast_bf16_weights"] = 2 * params
    elif s == "fsdp":
        shard = 4 * params // n
        (host if launch.offload_params else res)["weights"] = shard
        res["adam"] = 8 * trainable // n
        step["grads"] = 4 * trainable // n
        step["unsharded_params"] = fsdp_unsharded
    else:  # zero2 / zero3
        wb = 2 if bf16 else 4
        weights = wb * params if s == "zero2" else wb * params // n
        (host if launch.offload_params and s == "zero3" else res)["weights"] = weights
        states = {"fp32_master": 4 * trainable // n, "adam": 8 * trainable // n}
        for k, v in states.items():
            (host if launch.offload_optimizer else res)[k] = v
        res["grad_shard"] = wb * trainable // n
        (host if launch.offload_optimizer else step)["fp32_grad_shard"] = 4 * trainable // n
        step["deepspeed_buckets"] = DEEPSPEED_BUCKET_BYTES
        if s == "zero3":
            step["gathered_params"] = wb * min(ZERO3_LIVE_PARAMS, params)
    return {"resident": res, "step": step, "host": host}


def _fsdp_unsharded(shape: ModelShape, bf16: bool) -> int:
    """FSDP2 during forward/backward: the root unit (everything but the decoder layers) unsharded
    for the whole pass, plus the current and the prefetched decoder layer."""
    b = 2 if bf16 else 4
    root = shape.params - shape.layers * shape.layer_params
    return b * (root + 2 * shape.layer_params)


def layer_activation_bytes_per_token(shape: ModelShape, act_bytes: int, attn: str | None) -> int:
    """Tensors one Llama decoder layer keeps for backward, per token (counted from transformers'
    LlamaDecoderLayer: two RMSNorms keep their input and normalised output, q/k/v and their rotary
    outputs, the attention output, the MLP's gate, up, SiLU(gate) and product; RMSNorm computes in
    fp32). Eager attention adds its (heads × L) probabilities per token (caller multiplies by L)."""
    h, i = shape.hidden, shape.intermediate
    q = shape.heads * shape.head_dim
    kv = shape.kv_heads * shape.head_dim
    norms = 2 * (h * act_bytes + h * 4)            # input + fp32 normalised, two norms
    attn_t = (2 * q + 4 * kv + 2 * q) * act_bytes  # q, k, v (+ rotary), output and o_proj input
    mlp = 4 * i * act_bytes
    return norms + attn_t + mlp


def activation_bytes(shape: ModelShape, batch: int, length: int, act_bytes: int, checkpointing: bool,
                     attn: str | None = None) -> int:
    """Activations of one training forward kept for backward (without the logits), at the peak:
    with gradient checkpointing every decoder layer's input (B × L × hidden) plus one layer
    recomputed in full during backward; without it every layer in full."""
    tokens = batch * length
    per_layer = tokens * layer_activation_bytes_per_token(shape, act_bytes, attn)
    if attn == "eager":
        per_layer += batch * shape.heads * length * length * act_bytes * 2  # scores + probabilities
    # backward's working set inside one layer: gradients of the MLP's gate/up and of the hidden state
    working = tokens * (2 * shape.intermediate + 2 * shape.hidden) * act_bytes
    if checkpointing:
        return shape.layers * tokens * shape.hidden * act_bytes + per_layer + working
    return shape.layers * per_layer + working


def logits_peak_bytes(shape: ModelShape, batch: int, length: int, logit_bytes: int) -> int:
    """The logits peak of a training micro-batch with `logprobs_from_logits` (chunked, each chunk
    recomputed in backward): the (B, L, V) logits, their gradient accumulated over chunks, one
    full-size chunk gradient before it is added, and one chunk's fp32 work (scaled logits and
    log-softmax, plus the fp32 copy when the logits are bf16)."""
    full = batch * length * shape.vocab * logit_bytes
    chunk = batch * min(length, LOGPROB_CHUNK) * shape.vocab * 4 * (2 if logit_bytes == 4 else 3)
    return 3 * full + chunk


def logprob_pass_bytes(shape: ModelShape, batch: int, length: int, act_bytes: int) -> int:
    """A no-grad forward (log-prob pass): the logits, one chunk's fp32 work, and one layer's
    transient activations (nothing is kept for backward)."""
    full = batch * length * shape.vocab * act_bytes
    chunk = batch * min(length, LOGPROB_CHUNK) * shape.vocab * 4 * 3
    return full + chunk + batch * length * layer_activation_bytes_per_token(shape, act_bytes, None)


def engine_split(shape: ModelShape, cfg, capacity: int, share: float) -> tuple[int, int]:
    """(KV-cache bytes, concurrent full-length sequences) the engine's share leaves: vLLM's budget
    share × GPU minus its bf16 weights, its profiled forward (`ENGINE_BATCHED_TOKENS` tokens through
    the MLP, the sampler's fp32 logits for `max_num_seqs`) and its CUDA graphs."""
    budget = int(share * capacity)
    weights = 2 * shape.params
    profile = ENGINE_BATCHED_TOKENS * (2 * shape.intermediate + 4 * shape.hidden) * 2
    sampler = cfg.engine.max_num_seqs * shape.vocab * 4 * 2
    kv = budget - weights - profile - sampler - ENGINE_GRAPHS_BYTES
    if cfg.engine.kv_cache_memory_bytes is not None:
        kv = min(kv, cfg.engine.kv_cache_memory_bytes) if kv > 0 else kv
    tokens = max(0, kv) // shape.kv_bytes_per_token
    return tokens, min(cfg.engine.max_num_seqs, tokens // max(1, cfg.sampling.max_sequence_length))


def plan_memory(shape: ModelShape, cfg, launch: Launch, capacity: int) -> Plan:
    """Bytes per GPU of each phase of `cfg` under `launch` on GPUs of `capacity` bytes (pure)."""
    if launch.strategy not in STRATEGIES:
        raise PlanError(f"unknown strategy {launch.strategy!r}")
    bf16 = cfg.model.dtype == "bfloat16"
    act = 2 if cfg.model.dtype in ("bfloat16", "float16") else 4
    ppo = cfg.algorithm == "ppo"
    trainable = lora_params(shape, cfg) if cfg.model.lora is not None else shape.params
    B, L = cfg.ppo.micro_batch_size, cfg.sampling.max_sequence_length
    n = launch.processes

    unsharded = _fsdp_unsharded(shape, bf16)
    actor = model_states(shape.params, trainable, launch, bf16, unsharded)
    # the critic has no LM head (its value head is negligible)
    critic = model_states(shape.critic_params, shape.critic_params, launch, bf16,
                          unsharded - (2 if bf16 else 4) * (shape.params - shape.backbone_params)) if ppo else None
    ref_bytes = 0 if cfg.model.lora is not None else (2 if act == 2 else 4) * shape.params

    resident = {f"policy_{k}": v for k, v in actor["resident"].items()}
    if critic:
        resident.update({f"critic_{k}": v for k, v in critic["resident"].items()})
    if ref_bytes and not cfg.model.reference_offload:
        resident["reference"] = ref_bytes
    resident["cuda_context"] = TRAINER_CONTEXT_BYTES
    if nccl_bytes(launch):
        resident["nccl"] = nccl_bytes(launch)

    share = cfg.engine.gpu_memory_utilization
    engine_asleep = {"engine_asleep": ENGINE_ASLEEP_BYTES} if cfg.engine.sleep_during_training else {
        "engine_awake": int(share * capacity)}
    rollout = Phase("rollout", {**resident, "engine": int(share * capacity)})
    phases = [rollout]
    if cfg.algorithm == "vineppo":
        phases.append(Phase("mc", dict(rollout.parts)))
    lp = dict(resident)
    lp.update(engine_asleep)
    if ref_bytes and cfg.model.reference_offload:
        lp["reference"] = ref_bytes
    lp["forward"] = logprob_pass_bytes(shape, B, L, act)
    phases.append(Phase("logprobs", lp))
    # the training step: the policy's forward + backward, then (PPO) the critic's; their grads
    # and activations do not overlap in time except the policy's grads, kept until its step
    tr = dict(resident)
    tr.update(engine_asleep)
    tr.update({f"policy_{k}": v for k, v in actor["step"].items()})
    tr["activations"] = activation_bytes(shape, B, L, act, cfg.model.gradient_checkpointing,
                                         cfg.model.attn_implementation)
    tr["logits"] = logits_peak_bytes(shape, B, L, act)
    phases.append(Phase("train", tr))
    if critic:
        cr = dict(resident)
        cr.update(engine_asleep)
        cr.update({f"critic_{k}": v for k, v in critic["step"].items()})
        cr["policy_grads"] = actor["step"].get("grads", 0) + actor["step"].get("fp32_grad_shard", 0)
        cr["activations"] = activation_bytes(shape, B, L, act, cfg.model.gradient_checkpointing,
                                             cfg.model.attn_implementation)
        phases.append(Phase("train_critic", cr))

    kv_tokens, concurrent = engine_split(shape, cfg, capacity, share)
    notes: list[str] = []
    # host RAM per node: at load (weights read from disk: bf16 under DeepSpeed, which casts anyway,
    # fp32 otherwise; the reference is a deep copy before its cast), and per push / between steps
    load_b = 2 if launch.strategy in ("zero2", "zero3") and bf16 else 4
    per_rank_load = load_b * shape.params * (1 if cfg.model.lora is not None else 2)
    if ppo:
        per_rank_load += load_b * shape.critic_params
    sharded_push = launch.strategy in ("fsdp", "zero3")
    per_rank_push = 2 * shape.largest_tensor if sharded_push else 0  # one gathered bf16 tensor at a time
    per_rank_host = sum(actor["host"].values()) + (sum(critic["host"].values()) if critic else 0)
    if cfg.engine.sleep_during_training and cfg.engine.sleep_level == 1:
        per_rank_host += 2 * shape.params  # sleep level 1 keeps the engine's weights in CPU RAM
    if ref_bytes and cfg.model.reference_offload:
        per_rank_host += ref_bytes
    k = launch.per_node
    non_engine = rollout.total - rollout.parts["engine"]
    plan = Plan(launch=launch, capacity=capacity, phases=phases, policy_params=shape.params,
                critic_params=shape.critic_params if ppo else 0, trainable_params=trainable,
                kv_cache_tokens=kv_tokens, concurrent_sequences=concurrent,
                host_load_per_node=k * per_rank_load, host_push_per_node=k * per_rank_push,
                host_resident_per_node=k * per_rank_host,
                max_gpu_memory_utilization=max_share(shape, cfg, capacity, non_engine, phases), notes=notes)
    if cfg.engine.sleep_during_training and cfg.engine.sleep_level == 1:
        notes.append("engine.sleep_level=2 saves the engine's CPU copy of the weights "
                     f"({2 * shape.params * k / GIB:.1f} GiB per node): the trainer pushes fresh weights anyway")
    if concurrent < MIN_CONCURRENT_SEQUENCES and kv_tokens > 0:
        notes.append(f"the KV cache holds {concurrent} full-length sequences at once: generation will be slow")
    if n > 1 and cfg.ppo.minibatch_size % n == 0 and (cfg.ppo.minibatch_size // n) % cfg.ppo.micro_batch_size:
        notes.append(f"ppo.micro_batch_size {cfg.ppo.micro_batch_size} does not divide the per-process "
                     f"minibatch {cfg.ppo.minibatch_size // n} under {n} processes")
    return plan


def max_share(shape: ModelShape, cfg, capacity: int, non_engine: int, phases: list[Phase]) -> float | None:
    """The largest `engine.gpu_memory_utilization` (two decimals) whose rollout still leaves the
    required headroom next to the trainer's resident memory, or None when no share leaves a KV
    cache or the phases without the engine do not fit anyway."""
    limit = capacity - required_headroom(capacity)
    share = math.floor(100 * (limit - non_engine) / capacity) / 100
    if (share <= 0 or any(p.total > limit for p in phases if p.name not in ("rollout", "mc"))
            or engine_split(shape, cfg, capacity, share)[0] <= 0):
        return None
    return min(share, 0.95)
