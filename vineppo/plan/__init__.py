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

Behaviour modelled is the code's:
weights pushed to vLLM are streamed one bf16 tensor at a time, DeepSpeed runs load bf16 (DeepSpeed
casts the module anyway), the logits stay bf16 (no fp32 copy of the full logits), and sleep level
1 vs 2 only changes host RAM (both free the engine's GPU weights and KV cache).

Constants that are estimates, not measured on a GPU here, are named below (CUDA context, vLLM
CUDA graphs, DeepSpeed buckets). `benchmarks/gpu_check.py` compares the phases with
`torch.cuda.max_memory_allocated` on a real GPU.

The package: `inputs` (model shapes, launch files), `memory` (the pure bytes-per-phase model),
`advice` (the verdict, what to change, the table, `vineppo train`'s start-up check).
"""

from vineppo.plan.advice import (MemoryPlanError, check_memory_at_startup, format_plan, make_plan, refusal,
                                 suggest)
from vineppo.plan.inputs import (GIB, Launch, ModelShape, PlanError, launch_files, launch_from_env, model_shape,
                                 read_launch, shape_from_config)
from vineppo.plan.memory import (Phase, Plan, activation_bytes, engine_split, logits_peak_bytes, lora_params,
                                 model_states, plan_memory)

__all__ = ["GIB", "Launch", "MemoryPlanError", "ModelShape", "Phase", "Plan", "PlanError", "activation_bytes",
           "check_memory_at_startup", "engine_split", "format_plan", "launch_files", "launch_from_env",
           "logits_peak_bytes", "lora_params", "make_plan", "model_shape", "model_states", "plan_memory",
           "read_launch", "refusal", "shape_from_config", "suggest"]
