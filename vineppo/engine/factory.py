"""Choose and build the rollout engine from `EngineConfig` (vLLM when installed, else transformers)."""

from __future__ import annotations

import logging

from vineppo.config import EngineConfig
from vineppo.engine.base import Engine

log = logging.getLogger(__name__)


def resolve_backend(cfg: EngineConfig) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    from vineppo.engine import default_backend

    return default_backend()


def make_engine(cfg: EngineConfig, *, model_path: str, tokenizer, model=None, seed: int = 0,
                max_model_len: int | None = None, progress: bool = True, vllm_kwargs: dict | None = None) -> Engine:
    """`model_path` serves vLLM (it loads from disk once; later weights arrive in place);
    `model`, if given, is copied by the transformers backend instead of reading `model_path`.
    `vllm_kwargs`: further `vllm.LLM` arguments (e.g. LoRA serving, vineppo.lora_sync)."""
    engine = _build(cfg, model_path=model_path, tokenizer=tokenizer, model=model, seed=seed,
                    max_model_len=max_model_len, progress=progress, vllm_kwargs=vllm_kwargs)
    engine.shared_request_seed = cfg.shared_request_seed  # one seed for every request of a call
    return engine


def _build(cfg: EngineConfig, *, model_path, tokenizer, model, seed, max_model_len, progress, vllm_kwargs) -> Engine:
    backend = resolve_backend(cfg)
    if backend == "vllm":
        from vineppo.plan import check_engine_memory

        # CUDA: vLLM takes its share of the whole GPU next to what is already there (the trainer's
        # state); stop with what to change before vLLM refuses or the run dies out of memory later
        check_engine_memory(cfg.gpu_memory_utilization)
        from vineppo.engine.vllm import VLLMEngine
        return VLLMEngine(model_path, tokenizer, dtype=cfg.dtype, seed=seed,
                          gpu_memory_utilization=cfg.gpu_memory_utilization, max_num_seqs=cfg.max_num_seqs,
                          tensor_parallel_size=cfg.tensor_parallel_size, swap_space=cfg.swap_space,
                          kv_cache_memory_bytes=cfg.kv_cache_memory_bytes,
                          enable_prefix_caching=cfg.enable_prefix_caching, max_model_len=max_model_len,
                          sleep_level=cfg.sleep_level,
                          progress=progress, **(vllm_kwargs or {}))
    from vineppo.engine.hf import HFEngine
    return HFEngine(model if model is not None else model_path, tokenizer, max_batch_size=cfg.max_batch_size,
                    progress=progress)
