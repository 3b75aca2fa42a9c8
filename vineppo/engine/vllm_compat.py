"""vLLM version and platform shims used by `vineppo.engine.vllm.VLLMEngine`: the environment vLLM
must see before it is imported, feature checks on its API (engine args, keyword names), the torch
thread count around its calls, the HF weight layout a push is validated against, the stop ids
and tokenizer vLLM reads from the model dir, and the process-global life cycle of `vllm.LLM`s (vLLM's distributed state is one per process)."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch

from vineppo.engine.base import stop_token_ids as base_stop_token_ids

log = logging.getLogger("vineppo.engine.vllm")

#: Environment vLLM must see before it is imported (setdefault: an explicit user value wins).
VLLM_ENV_DEFAULTS = {
    # Engine core in this process: the model lives here, so weights are pushed by reference.
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    # vLLM logs every engine step summary at INFO; the engine's own stats are in EngineStats.
    "VLLM_LOGGING_LEVEL": "WARNING",
}

#: ids of the open `vllm.LLM`s of this process (vLLM's distributed state is process-global)
_OPEN: set[int] = set()
#: True while the torch.distributed group in this process was created by vLLM (not by the trainer)
_VLLM_OWNS_DIST = False


def prepare_vllm_env() -> None:
    """Set the environment vLLM needs; call before the first ``import vllm`` (done by VLLMEngine)."""
    for key, value in VLLM_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def import_vllm():
    prepare_vllm_env()
    import vllm  # noqa: WPS433 (lazy on purpose: seconds to import, process-wide side effects)

    return vllm


def engine_arg_names() -> set[str]:
    from vllm.engine.arg_utils import EngineArgs

    return {f.name for f in dataclasses.fields(EngineArgs)}


def checkpoint_dtype(model_path: str) -> str | None:
    """The dtype recorded in the checkpoint's config ("dtype" / "torch_dtype"), if any."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_path)
    except Exception:  # offline hub id, custom code: let vLLM decide
        return None
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    dtype = str(dtype).removeprefix("torch.") if dtype is not None else None
    return dtype if dtype in ("float32", "bfloat16", "float16") else None


def accepts(fn, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with `n` torch intra-op threads, then restore the caller's count."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch._C.set_num_threads(n)
    try:
        yield
    finally:
        torch._C.set_num_threads(before)


def hf_layout(model_path: str, trust_remote_code: bool = False) -> tuple[dict[str, torch.Size], dict[str, str]]:
    """HF state-dict names -> shapes of `model_path` (what a trainer's state_dict() holds), and
    tied aliases (name -> the name it shares storage with), which may be omitted."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        first: dict[int, str] = {}
        aliases = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            if id(p) in first:
                aliases[name] = first[id(p)]
            else:
                first[id(p)] = name
        return expected, aliases
    except Exception as e:  # custom architectures: fall back to the checkpoint's own names
        log.debug("meta model for %s failed (%r); using checkpoint headers", model_path, e)
    from safetensors import safe_open

    expected = {}
    for f in sorted(Path(model_path).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():
                expected[k] = torch.Size(sf.get_slice(k).get_shape())
    if not expected:
        raise RuntimeError(f"cannot determine the weight layout of {model_path}")
    return expected, {}


def stop_token_ids(tokenizer, model_path) -> set[int]:
    """Ids that end a response: `engine.base.stop_token_ids` over the tokenizer's EOS and the EOS ids
    of the generation config saved in `model_path` (none when it has no generation_config.json)."""
    try:
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(str(model_path)).eos_token_id
    except Exception:  # no generation_config.json
        eos = None
    return base_stop_token_ids(tokenizer, eos)


def warn_if_tokenizers_differ(llm, tokenizer) -> None:
    """Warn when vLLM loaded a tokenizer that encodes differently from the one given to the engine."""
    try:
        vtok = llm.get_tokenizer()
    except Exception:
        return
    probe = "Natalia sold 48/2 = 24 clips.\n#### 72"
    try:
        same = list(vtok.encode(probe, add_special_tokens=False)) == list(tokenizer.encode(probe, add_special_tokens=False))
    except Exception:
        same = True
    if not same:
        warnings.warn("vLLM loads a different tokenizer from the model dir than the one given to VLLMEngine: "
                      "prompts are token ids (fine), but stop strings are detected on vLLM's text and may "
                      "cut at other places. Save the tokenizer so that every loader agrees.", stacklevel=3)


def local_rank(rank: int, world: int) -> int:
    """This process's rank on its node when the launcher did not say (LOCAL_RANK unset)."""
    per_node = os.environ.get("LOCAL_WORLD_SIZE")
    if per_node:
        return rank % int(per_node)
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return rank % torch.cuda.device_count()
    return rank


def register_open(llm, vllm_owns_dist: bool) -> None:
    """Record an open `vllm.LLM`; `vllm_owns_dist`: vLLM is creating this process's torch.distributed
    group (none existed), so the last engine closed may tear it down."""
    global _VLLM_OWNS_DIST
    if vllm_owns_dist:
        _VLLM_OWNS_DIST = True
    _OPEN.add(id(llm))


def shutdown_llm(llm, tmp_dirs: list[str]) -> None:
    """Close one `vllm.LLM` created by VLLMEngine (runs once: close() or garbage collection)."""
    global _VLLM_OWNS_DIST
    _OPEN.discard(id(llm))
    others = bool(_OPEN)
    client = getattr(llm.llm_engine, "engine_core", None)
    core = getattr(client, "engine_core", None)  # in-process EngineCore (its client's finalizer is detached)
    try:
        if not others and _VLLM_OWNS_DIST:
            # executor, scheduler, distributed state (vLLM's own group)
            (core if core is not None else client).shutdown()
            _VLLM_OWNS_DIST = False
        elif core is None:
            client.shutdown()  # engine core in another process: nothing process-global here
        else:
            executor = getattr(core, "model_executor", None) or getattr(llm.llm_engine, "model_executor", None)
            if executor is not None:
                executor.shutdown()
            if getattr(core, "scheduler", None) is not None:
                core.scheduler.shutdown()
            if not others:  # vLLM's groups, not the trainer's default group
                from vllm.distributed import parallel_state as ps

                ps.destroy_model_parallel()
                if getattr(ps, "_WORLD", None) is not None:
                    ps._WORLD.destroy()
                    ps._WORLD = None
    except Exception as e:  # pragma: no cover
        log.debug("vLLM shutdown: %r", e)
    for d in tmp_dirs:
        shutil.rmtree(d, ignore_errors=True)
    tmp_dirs.clear()
