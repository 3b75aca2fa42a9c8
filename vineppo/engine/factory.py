"""Choose and build the rollout engine from `EngineConfig` (vLLM when installed, else transformers)."""

from __future__ import annotations

import logging

import torch

from vineppo.config import EngineConfig
from vineppo.engine.base import Engine

log = logging.getLogger(__name__)


def resolve_backend(cfg: EngineConfig) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    from vineppo.engine import default_backend

    return default_backend()


def make_engine(cfg: EngineConfig, *, model_path: str, tokenizer, model=None, seed: int = 0,
                max_model_len: int | None = None, progress: bool = True, vllm_kwargs: dict | None = None,
                device=None) -> Engine:
    """`model_path` serves vLLM (it loads from disk once; later weights arrive in place);
    `model`, if given, is copied by the transformers backend instead of reading `model_path`.
    `vllm_kwargs`: further `vllm.LLM` arguments (e.g. LoRA serving, vineppo.lora_sync).
    `device`: where the transformers backend generates (default: `model`'s device, else the
    current CUDA device when there is one, else the CPU); vLLM picks its own."""
    engine = _build(cfg, model_path=model_path, tokenizer=tokenizer, model=model, seed=seed,
                    max_model_len=max_model_len, progress=progress, vllm_kwargs=vllm_kwargs, device=device)
    engine.shared_request_seed = cfg.shared_request_seed  # one seed for every request of a call
    return engine


#: `engine.dtype` names the transformers backend understands (vLLM's spellings of the same dtypes)
HF_DTYPES = {"float32": torch.float32, "float": torch.float32, "bfloat16": torch.bfloat16,
             "float16": torch.float16, "half": torch.float16}


def hf_engine_dtype(name: str) -> torch.dtype | None:
    """The transformers engine's dtype for `engine.dtype`: None for "auto" (a copied model keeps its
    dtype, a checkpoint loads in float32), else the named dtype (the paper configs' bfloat16)."""
    if name == "auto":
        return None
    if name not in HF_DTYPES:
        raise ValueError(f"engine.dtype {name!r}: the transformers engine knows auto, {', '.join(HF_DTYPES)}")
    return HF_DTYPES[name]


def hf_engine_device(model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    if model is not None and hasattr(model, "parameters"):
        return next(model.parameters()).device
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _build(cfg: EngineConfig, *, model_path, tokenizer, model, seed, max_model_len, progress, vllm_kwargs,
           device) -> Engine:
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
                    device=hf_engine_device(model, device), dtype=hf_engine_dtype(cfg.dtype), progress=progress)
