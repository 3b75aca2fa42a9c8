"""Will it fit? Per-GPU memory of each phase of a run, before launch (`vineppo plan`).

`plan_memory(shape, cfg, launch, capacity)` is a pure function from model shapes (`ModelShape`,
exact parameter counts from the model's config.json built on the meta device), the run config and
the launch strategy (`Launch`, read from an `accelerate` launch file or from the launcher's
environment) to bytes per phase. It mirrors what the code does (vineppo/trainer.py,
vineppo/distributed.py, vineppo/engine/vllm.py, vineppo/loop.py):

- rollout / MC: the vLLM engine takes `engine.gpu_memory_utilization` × the GPU (vLLM's own
  budget: its weights, its profiled activations, CUDA graphs, the rest KV cache), next to what the
  trainer keeps resident between steps (weights, fp32 masters, Adam states, the reference unless
  `model.reference_offload`, the critic and its optimizer, DDP's gradient buckets).
- log-prob pass (engine asleep): resident + the reference back on the GPU + a no-grad forward.
- training step (engine asleep): resident + gradients + activations of one micro-batch (decoder
  layer inputs under gradient checkpointing) + the logits peak of the chunked log-softmax.

A plan fits when every phase leaves max(3 GiB, 4 % of the GPU) free (`required_headroom`) and the
engine's share leaves a KV cache; NCCL's buffers are a term per communicator (`nccl_communicators`).

Behaviour modelled: weights pushed to vLLM are streamed one bf16 tensor at a time, DeepSpeed runs
load bf16 (DeepSpeed casts the module anyway), the logits stay bf16 (no fp32 copy of the full
logits), and sleep level 1 vs 2 only changes host RAM (both free the engine's GPU weights and KV
cache).

Constants that are estimates, not measured on a GPU here, are named in `memory` (CUDA context,
NCCL per communicator, vLLM CUDA graphs, DeepSpeed buckets, the headroom). `benchmarks/gpu_check.py` compares the phases with
`torch.cuda.max_memory_allocated` on a real GPU.

The package: `inputs` (model shapes, launch files), `memory` (the pure bytes-per-phase model),
`advice` (the verdict, what to change, the table, `vineppo train`'s start-up check, the free-memory
check before the engine starts, the Slurm stop lead), `tables` (the plan tables of the paper runs in
the docs, regenerated and checked: `python -m vineppo.plan.tables`).
"""

from vineppo.plan.advice import (MemoryPlanError, check_engine_memory, check_memory_at_startup,
                                 engine_share_shortfall, format_plan, make_plan, refusal, stop_lead_seconds, suggest)
from vineppo.plan.inputs import (GIB, H100_80GB_BYTES, Launch, ModelShape, PlanError, device_capacity, launch_files,
                                 launch_from_env, model_shape, read_launch, shape_from_config)
from vineppo.plan.memory import (NOT_ALLOCATOR_PARTS, Phase, Plan, activation_bytes, engine_split, logits_peak_bytes,
                                 lora_params, model_states, nccl_bytes, nccl_communicators, plan_memory,
                                 required_headroom)

__all__ = ["GIB", "H100_80GB_BYTES", "Launch", "MemoryPlanError", "ModelShape", "NOT_ALLOCATOR_PARTS", "Phase",
           "Plan", "PlanError", "activation_bytes", "check_engine_memory", "check_memory_at_startup",
           "device_capacity", "engine_share_shortfall", "engine_split", "format_plan", "launch_files",
           "launch_from_env", "logits_peak_bytes", "lora_params", "make_plan", "model_shape", "model_states",
           "nccl_bytes", "nccl_communicators", "plan_memory", "read_launch", "refusal", "required_headroom",
           "shape_from_config", "stop_lead_seconds", "suggest"]
