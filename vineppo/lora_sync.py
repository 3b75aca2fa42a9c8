"""Getting a LoRA policy into the vLLM engine: two ways (`model.lora.sync`).

- "merged": merge the adapter into the base weights, push the full HF-named state dict in place
  (`Engine.update_weights`), unmerge. Works with every engine; generation runs at base-model speed.
- "adapter": save only the adapter (PEFT format, a few MB) and let vLLM serve it on top of the
  unchanged base weights (`VLLMEngine.update_adapter`, vLLM's LoRA support: `enable_lora`,
  `LoRARequest`). Less to move per sync, but every generated token pays the LoRA kernels.

benchmarks/lora_sync.py measures both on this machine (sync + a rollout batch) and decides the
default; the transformers engine always takes the merged path.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from vineppo.config import LoraConfig

#: the ranks vLLM accepts for `max_lora_rank` (vllm.config.lora.MaxLoRARanks)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_engine_kwargs(lora: LoraConfig) -> dict:
    """`vllm.LLM` arguments for serving one adapter of rank `lora.r`."""
    rank = next((r for r in VLLM_LORA_RANKS if r >= lora.r), None)
    if rank is None:
        raise ValueError(f"model.lora.r={lora.r} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}")
    return {"enable_lora": True, "max_lora_rank": rank, "max_loras": 1}


def uses_adapter_sync(lora: LoraConfig | None, backend: str) -> bool:
    return lora is not None and lora.sync == "adapter" and backend == "vllm"


class PolicySync:
    """Pushes the trainer's current policy into the engine, by merged weights or adapter only."""

    def __init__(self, adapter: bool) -> None:
        self.adapter = adapter
        self._dir = tempfile.TemporaryDirectory(prefix="vineppo-lora-") if adapter else None

    def push(self, engine, trainer, keep: bool = False) -> dict | None:
        """Merged path (a collective under FSDP / ZeRO-3, so every rank calls it): the full weights
        streamed into the engine one tensor at a time, gathered / merged ones in the engine's dtype
        (vLLM's `dtype`; the transformers engine has none and casts on copy), so no rank holds a
        copy of the whole policy in host RAM. `keep` (the greedy sync check): collect and return
        the pushed state dict instead (adapter sync: the merged weights it amounts to). None when
        nothing is kept."""
        if not self.adapter:
            items = trainer.policy_state_items(getattr(engine, "dtype", None))
            if keep:
                state = dict(items)
                engine.update_weights(state)
                return state
            engine.update_weights(items)
            return None
        if getattr(engine, "sleeping", False):
            engine.wake()  # vLLM loads an adapter into live engine memory (GPU sleep mode)
        path = Path(self._dir.name)
        # PEFT writes adapter_config.json + adapter_model.safetensors: the layout vLLM loads. Every
        # rank writes the (gathered) adapter into its own temporary directory for its own engine.
        trainer.save_adapter(path, every_rank=True)
        engine.update_adapter(path)
        # `keep` (the greedy sync check): the merged weights the engine now serves, for comparison
        return trainer.policy_state_dict() if keep else None

    def close(self) -> None:
        if self._dir is not None:
            self._dir.cleanup()
