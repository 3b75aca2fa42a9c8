"""Distribution strategies: the only module that knows which one runs.

`accelerate launch --config_file launch/X.yaml -m vineppo train ...` is the entry point for every
strategy; the launcher's environment (ACCELERATE_USE_FSDP / ACCELERATE_USE_DEEPSPEED and their
fields) says which one. `launch_strategy()` reads it:

| strategy | trained models driven by | gathers full weights with |
|---|---|---|
| single, ddp | accelerate (`prepare`, `accumulate`, `clip_grad_norm_`) | nothing: parameters are full |
| fsdp (FSDP2 only) | accelerate (one `prepare` per model: FSDP2 takes one model per call) | `DTensor.full_tensor()` per tensor |
| zero2, zero3 | DeepSpeed directly: one `deepspeed.initialize` engine per trained model | ZeRO-3: `GatheredParameters` per tensor |

Why DeepSpeed is driven directly: accelerate allows one DeepSpeed model per `prepare` and binds
`accelerator.backward` to one engine, but PPO trains an actor and a critic, each with its own
optimizer, LR schedule and gradient clipping (as the official code and OpenRLHF do). The
`Accelerator` is then an ordinary data-parallel one (process group, gather, barriers); DeepSpeed
reuses its process group.

CPU rehearsal (launch/cpu/*.yaml, 2 gloo processes): accelerate turns any plugin into plain DDP
when `cpu=True`, so for FSDP the shared `AcceleratorState` is switched back to FSDP after
construction (its real FSDP2 `prepare` then runs on CPU); DeepSpeed runs on CPU with
`DS_ACCELERATOR=cpu` over the same gloo group. Everything after that is the GPU code path.

Weights for the engine push and for checkpoints are gathered by every rank together, one tensor
at a time and copied to CPU (device memory peak: one full tensor), in the engine's dtype for the
push and the training dtype (`model.dtype`) for checkpoints, which only the writing rank keeps
(`writer_state_dict`); LoRA weights are merged out of place from the gathered base weight and
adapter matrices (`gathered_state_items`), the same code under every strategy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

log = logging.getLogger(__name__)

STRATEGY_FILE = "strategy.json"


class StrategyError(RuntimeError):
    pass


def launch_strategy() -> str:
    """'single' | 'ddp' | 'fsdp' | 'zero2' | 'zero3', from `accelerate launch`'s environment."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        if env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
            raise StrategyError("deepspeed_config_file is not supported: vineppo builds the DeepSpeed config "
                                "from the launch file's fields and the run config (see launch/README.md)")
        stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        if stage not in ("2", "3"):
            raise StrategyError(f"DeepSpeed ZeRO stage {stage} is not supported (use 2 or 3; DDP for stage 0)")
        return f"zero{stage}"
    if env.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        if env.get("FSDP_VERSION", "1") != "2":
            raise StrategyError("FSDP needs fsdp_version: 2 in the launch file (FSDP2: per-tensor full-weight "
                                "gathering for the engine push); FSDP1 is not supported")
        if env.get("FSDP_CPU_RAM_EFFICIENT_LOADING", "false").lower() == "true":
            # transformers then loads zeros on every rank but each node's first, expecting accelerate
            # to broadcast rank 0's weights at `prepare`: the frozen reference is never prepared
            raise StrategyError("fsdp_cpu_ram_efficient_loading: true is not supported (the frozen reference "
                                "model would hold zeros on every rank but the first); set it to false")
        return "fsdp"
    return "ddp" if world > 1 else "single"


@contextlib.contextmanager
def _env_without(*names: str):
    saved = {k: os.environ.pop(k) for k in names if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def build_accelerator(cfg, mixed_precision: str | None = None):
    """The run's Accelerator for the launched strategy (see the module docstring). `mixed_precision`
    (accelerate's): None is bf16 when `model.dtype` is bfloat16 on CUDA, else "no"; tests pass
    "bf16" to run the GPU precision path on CPU."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    strategy = launch_strategy()
    cpu = not torch.cuda.is_available()
    mixed = mixed_precision or ("bf16" if (cfg.model.dtype == "bfloat16" and not cpu) else "no")
    timeout = collective_timeout(cfg)
    # under NCCL a timed-out collective may abort the process from the watchdog thread before
    # `name_timeout_setting` sees it: this line names the setting behind the watchdog's timeout
    log.info("collectives time out after %s (distributed.timeout_minutes=%g)", timeout,
             cfg.distributed.timeout_minutes)
    kwargs = dict(cpu=cpu, kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)])
    if strategy in ("zero2", "zero3"):
        if cpu:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        # DeepSpeed precision comes from its own config (bf16 weights + fp32 master copy)
        with _env_without("ACCELERATE_USE_DEEPSPEED"):
            acc = Accelerator(mixed_precision="no", **kwargs)
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo" if cpu else "nccl", dist_init_required=False,
                                   timeout=timeout)
        pin_deepspeed_world_group(timeout)
        return acc
    if strategy == "fsdp" and cpu:
        from accelerate import FullyShardedDataParallelPlugin
        from accelerate.state import AcceleratorState, PartialState
        from accelerate.utils import DistributedType

        plugin = FullyShardedDataParallelPlugin()  # fields from the launcher's FSDP_* variables
        acc = Accelerator(mixed_precision=mixed, fsdp_plugin=plugin, **kwargs)
        # both shared states: every later AcceleratorState() re-copies PartialState's fields
        PartialState().distributed_type = DistributedType.FSDP
        state = AcceleratorState()
        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = plugin
        return acc
    return Accelerator(mixed_precision=mixed, **kwargs)


def collective_timeout(cfg) -> timedelta:
    """`distributed.timeout_minutes` (fractions allowed) as the timeout of every process group."""
    return timedelta(minutes=cfg.distributed.timeout_minutes)


def pin_deepspeed_world_group(timeout: timedelta):
    """Create DeepSpeed's copy of the world group ourselves, with `timeout`.

    DeepSpeed (0.19) runs ZeRO's collectives (ZeRO-3's parameter all-gathers, the gradient
    reduce-scatters) on a clone of the world group, made lazily by
    `deepspeed.utils.groups._clone_world_group` with `dist.new_group(ranks)` and no timeout, i.e.
    torch's default (NCCL 10 min, gloo 30 min) whatever `init_distributed(timeout=)` said. After a
    long, uneven MC phase the first ZeRO-3 all-gather then kills the ranks that are ahead. Seeding
    that clone (DeepSpeed reuses it when it is set) puts ZeRO under `distributed.timeout_minutes`."""
    import torch.distributed as tdist
    from deepspeed.utils import groups

    if getattr(groups, "_WORLD_GROUP", None) is None:
        groups._WORLD_GROUP = tdist.new_group(ranks=list(range(tdist.get_world_size())), timeout=timeout)
    return groups._WORLD_GROUP


class CollectiveTimeout(RuntimeError):
    """A collective waited longer than `distributed.timeout_minutes` for the other ranks."""


#: how torch's backends word a collective that waited past its timeout (gloo: "Timed out waiting
#: 3000ms for recv operation", its store: "Socket Timeout", NCCL: "Watchdog caught collective
#: operation timeout"); other timeouts (an engine's, a grader's) are not ours to rename
_TIMEOUT_WORDS = ("timed out waiting", "socket timeout", "collective operation timeout")


@contextlib.contextmanager
def name_timeout_setting(cfg):
    """Re-raise a collective's timeout as `CollectiveTimeout` naming `distributed.timeout_minutes`
    (the backends' own message names neither the setting nor its value). Under NCCL the watchdog
    may abort the process before Python sees an error; its log line then carries the timeout."""
    try:
        yield
    except RuntimeError as e:  # torch.distributed.DistBackendError is one
        text = str(e).lower()
        if isinstance(e, CollectiveTimeout) or not any(w in text for w in _TIMEOUT_WORDS):
            raise
        minutes = cfg.distributed.timeout_minutes
        raise CollectiveTimeout(
            f"a collective waited more than distributed.timeout_minutes={minutes:g} for the other ranks "
            f"(a rank is stuck or much slower, e.g. a long uneven MC phase); raise distributed.timeout_minutes "
            f"if the ranks are only slow. Backend error: {str(e).strip()[:500]}") from e


def make_strategy(acc, cfg) -> "AccelerateStrategy":
    name = launch_strategy()
    if name in ("zero2", "zero3"):
        return DeepSpeedStrategy(acc, cfg, name)
    return AccelerateStrategy(acc, cfg, name)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])


def _lora_layers(model) -> dict[str, torch.nn.Module]:
    """PEFT's LoRA layers of a (possibly sharded) PEFT model, by module name in the base model."""
    return {name: m for name, m in model.get_base_model().named_modules()
            if hasattr(m, "lora_A") and hasattr(m, "base_layer")}


def lora_delta(layer, adapter: str, lora_a: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
    """The weight delta of one LoRA adapter from its full A and B matrices, in fp32:
    scaling × B A (transposed for Conv1D-style `fan_in_fan_out` layers), PEFT's Linear merge rule
    (`get_delta_weight`) written out because sharded A and B must be gathered first."""
    delta = (lora_b.float() @ lora_a.float()) * layer.scaling[adapter]
    return delta.T if getattr(layer, "fan_in_fan_out", False) else delta


def gathered_state_items(model, full, dtype: torch.dtype | None = None, lora: bool = False
                         ) -> Iterator[tuple[str, torch.Tensor]]:
    """HF-named full tensors of `model` (unwrapped), one at a time: gathered or merged ones on CPU in
    `dtype` (None: as trained), resident full parameters as they are. `full(tensors)` is the strategy's context manager that yields those tensors in full
    (a collective under FSDP2 / ZeRO-3: every rank iterates together). With `lora`, each adapted
    weight is merged out of place (W + delta in fp32, then cast): the live base weights are never
    modified, so repeated pushes cannot drift them (an in-place merge/unmerge would, in bf16)."""
    base = model.get_base_model() if lora else model
    layers = _lora_layers(model) if lora else {}
    params = dict(base.named_parameters(remove_duplicate=False))
    suffix = ".base_layer.weight"
    for k, v in base.state_dict().items():
        if lora and "lora_" in k:
            continue
        t = params.get(k, v)  # the Parameter: ZeRO-3 gathers Parameters, its state_dict holds stubs
        layer = layers.get(k[: -len(suffix)]) if k.endswith(suffix) else None
        adapters = [a for a in layer.active_adapters if a in layer.lora_A] if layer is not None else []
        parts = [t] + [w for a in adapters for w in (layer.lora_A[a].weight, layer.lora_B[a].weight)]
        with full(parts) as whole, torch.no_grad():
            w = whole[0].detach()
            if adapters:
                w = w.float().clone()
                for i, a in enumerate(adapters):
                    w += lora_delta(layer, a, whole[1 + 2 * i], whole[2 + 2 * i]).to(w.device)
                w = w.to(dtype or whole[0].dtype)
            if adapters or hasattr(t, "full_tensor") or hasattr(t, "ds_id"):
                # a new full tensor (gathered or merged): to host memory in the engine's dtype, so the
                # device holds one at a time (ZeRO-3 also re-partitions the gathered storage on exit)
                out = w.to("cpu", dtype=dtype or w.dtype, copy=True)
            else:
                out = w  # a resident full parameter: shared, no copy (the engine converts it lazily)
        yield k.replace(".base_layer", ""), out


@contextlib.contextmanager
def _full_dtensors(tensors):
    """FSDP2 (DTensor parameters): all-gather each; plain tensors are already full."""
    yield [t.full_tensor() if hasattr(t, "full_tensor") else t for t in tensors]


class AccelerateStrategy:
    """single process, DDP and FSDP2: accelerate prepares, accumulates, clips and saves."""

    def __init__(self, acc, cfg, name: str):
        self.acc, self.cfg, self.name = acc, cfg, name

    # ---- set-up ---------------------------------------------------------------------------
    def configure_batches(self, micro_batch_size: int, accumulation: int) -> None:
        self.acc.gradient_accumulation_steps = accumulation

    def prepare(self, actor, opt, scheduler, critic=None, critic_opt=None, critic_scheduler=None):
        acc = self.acc
        if critic is None:
            actor, opt = acc.prepare(actor, opt)
            acc.register_for_checkpointing(scheduler)
            self._keep_half_outputs(actor)
            return actor, opt, None, None
        if self.name == "fsdp":  # FSDP2: one model (and its optimizer) per prepare call
            actor, opt = acc.prepare(actor, opt)
            critic, critic_opt = acc.prepare(critic, critic_opt)
        else:
            actor, opt, critic, critic_opt = acc.prepare(actor, opt, critic, critic_opt)
        acc.register_for_checkpointing(scheduler, critic_scheduler)
        self._keep_half_outputs(actor, critic)
        return actor, opt, critic, critic_opt

    def _keep_half_outputs(self, *models) -> None:
        """Under `mixed_precision: bf16` accelerate wraps each prepared model's forward in
        `convert_outputs_to_fp32`: the full (B, L, vocab) logits would come back in fp32 (+7.6 GiB
        at 7B, micro-batch 8 × 2499 tokens), which cancels the chunked log-softmax
        (`losses.logprobs_from_logits` upcasts one chunk at a time). accelerate's own unwrapping
        with `keep_fp32_wrapper=False` removes that wrapper from the inner module in place (the
        DDP / FSDP wrapper stays); the trainer runs every forward under `accelerator.autocast()`."""
        for m in models:
            if m is not None:
                self.acc.unwrap_model(m, keep_fp32_wrapper=False)

    def unwrap(self, model):
        return self.acc.unwrap_model(model)

    @property
    def plain_modules(self) -> bool:
        """True when the unwrapped models are ordinary modules with full parameters (safe to copy)."""
        return self.name in ("single", "ddp")

    def load_dtype(self, stored: torch.dtype | None = None) -> torch.dtype:
        """The dtype trained models are loaded in (`stored`: the checkpoint's own dtype, if known).
        DDP / FSDP keep fp32 master weights and run bf16 under autocast, so fp32 in general. Under
        FSDP2 with mixed precision, accelerate's `prepare` casts every trainable parameter to fp32
        itself before sharding: a checkpoint stored in that half dtype is then loaded in it (the
        fp32 masters come out bit-identical, and each rank holds a half-size copy until `prepare`
        instead of a full fp32 one; frozen LoRA base weights stay in it). DDP casts nothing."""
        half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(self.acc.mixed_precision))
        if self.name == "fsdp" and half is not None and stored == half:
            return half
        return torch.float32

    # ---- one optimizer step -------------------------------------------------------------
    def accumulate(self, *models):
        return self.acc.accumulate(*models)

    def backward(self, model, loss: torch.Tensor) -> None:
        self.acc.backward(loss)

    @property
    def sync_gradients(self) -> bool:
        return bool(self.acc.sync_gradients)

    def optimizer_step(self, model, opt, max_norm: float) -> float | None:
        """Call after every micro-batch's backward: at the accumulation boundary clip `model`'s
        gradients alone (never one norm over actor and critic) and step `opt`. Returns the
        pre-clip gradient norm at the boundary, else None."""
        norm = None
        if self.acc.sync_gradients:
            n = self.acc.clip_grad_norm_(model.parameters(), max_norm)
            if n is None:  # some accelerate versions return None for engines that clip themselves
                n = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
            if hasattr(n, "full_tensor"):
                n = n.full_tensor()
            norm = float(n)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return norm

    # ---- full weights ---------------------------------------------------------------------
    def full_state_items(self, model, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """HF-named full tensors of a prepared model, one at a time on CPU in `dtype` (None: as
        trained), on every rank (a collective under FSDP2 / ZeRO-3: all ranks iterate together);
        LoRA merged."""
        yield from gathered_state_items(self.unwrap(model), self._full, dtype, lora=self.cfg.model.lora is not None)

    def _full(self, tensors):
        return _full_dtensors(tensors)

    def writer_state_dict(self, model, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor] | None:
        """The full HF-named state dict for a checkpoint, in `dtype`, on the main process (the writer)
        only; None on every other rank. Every rank iterates the gathered tensors together (FSDP2's
        all-gather and ZeRO-3's `GatheredParameters` reach every rank: neither has a rank-0-only
        gather), and the others drop each one at once, so a rank that does not write holds at most
        one gathered tensor at any time, never the whole model."""
        keep = self.acc.is_main_process
        out: dict[str, torch.Tensor] = {}
        for k, v in self.full_state_items(model, dtype):
            if keep:
                # resident (DDP) parameters come as they are: the writer casts its copy
                out[k] = v.detach().to("cpu", dtype=dtype or v.dtype, copy=v.dtype != (dtype or v.dtype))
            del v
        return out if keep else None

    def adapter_state(self, model) -> dict[str, torch.Tensor]:
        """The LoRA adapter's full tensors under the PEFT model's own names (what PEFT's
        `save_pretrained(state_dict=...)` filters), gathered by every rank together."""
        out = {}
        for k, p in self.unwrap(model).named_parameters():
            if "lora_" in k:
                with self._full([p]) as (w,):
                    out[k] = w.detach().to("cpu", copy=True)
        return out

    # ---- trainer state ----------------------------------------------------------------------
    def save_state(self, out_dir: Path, schedulers: dict) -> None:
        """Optimizer(s), scheduler(s), RNG of every process (accelerate's format). All ranks."""
        self.acc.save_state(str(out_dir), safe_serialization=True)
        self._write_info(out_dir)

    def load_state(self, in_dir: Path, schedulers: dict) -> None:
        self._check_info(in_dir)
        self.acc.load_state(str(in_dir))

    def _write_info(self, out_dir: Path) -> None:
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            (Path(out_dir) / STRATEGY_FILE).write_text(json.dumps(
                {"strategy": self.name, "processes": self.acc.num_processes}))

    def _check_info(self, in_dir: Path) -> None:
        p = Path(in_dir) / STRATEGY_FILE
        info = json.loads(p.read_text()) if p.is_file() else {}
        saved_n, saved_s = info.get("processes"), info.get("strategy")
        if saved_n is not None and saved_n != self.acc.num_processes:
            raise StrategyError(f"{in_dir} was saved by {saved_n} processes ({saved_s}); resume with the same "
                                f"number of processes (this run has {self.acc.num_processes})")
        if saved_s is not None and saved_s != self.name:
            raise StrategyError(f"{in_dir} was saved under {saved_s}; resume with the same strategy (this run: "
                                f"{self.name}). Its HF weights load anywhere: start a new run from them instead")


class DeepSpeedStrategy(AccelerateStrategy):
    """ZeRO-2 / ZeRO-3: one DeepSpeed engine per trained model, each with its own optimizer,
    gradient accumulation and clipping; the trainer steps the LR schedules by hand."""

    def __init__(self, acc, cfg, name: str):
        super().__init__(acc, cfg, name)
        self.stage = int(name[-1])
        self.micro_batch_size = 1
        self.accumulation = 1
        self._boundary = True
        self.engines: dict[str, object] = {}

    def configure_batches(self, micro_batch_size: int, accumulation: int) -> None:
        self.micro_batch_size, self.accumulation = micro_batch_size, accumulation

    def ds_config(self) -> dict:
        env = os.environ
        offload_opt = env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none")
        offload_param = env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none")
        launch_clip = env.get("ACCELERATE_GRADIENT_CLIPPING")
        if launch_clip not in (None, "", "none") and float(launch_clip) != self.cfg.optim.max_grad_norm:
            log.warning("launch file gradient_clipping %s ignored: optim.max_grad_norm %s clips each model",
                        launch_clip, self.cfg.optim.max_grad_norm)
        zero: dict = {"stage": self.stage, "offload_optimizer": {"device": offload_opt},
                      "offload_param": {"device": offload_param}}
        if self.stage == 3:
            zero["stage3_gather_16bit_weights_on_model_save"] = False  # we gather ourselves
        bf16 = self.cfg.model.dtype == "bfloat16" and torch.cuda.is_available()
        return {
            "train_micro_batch_size_per_gpu": self.micro_batch_size,
            "gradient_accumulation_steps": self.accumulation,
            "train_batch_size": self.micro_batch_size * self.accumulation * self.acc.num_processes,
            "gradient_clipping": self.cfg.optim.max_grad_norm,
            "zero_optimization": zero,
            "bf16": {"enabled": bf16},
            # our AdamW (torch's); with optimizer offload it runs on the CPU partitions
            "zero_allow_untested_optimizer": True,
            "zero_force_ds_cpu_optimizer": False,
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }

    def prepare(self, actor, opt, scheduler, critic=None, critic_opt=None, critic_scheduler=None):
        import deepspeed

        def init(model, optimizer):
            # the LR schedule is the trainer's LambdaLR over `optimizer`'s param groups (DeepSpeed
            # keeps those dicts), stepped by hand once per optimizer step; not given to DeepSpeed
            engine, ds_opt, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=self.ds_config(),
                                                         dist_init_required=False)
            return engine, ds_opt

        actor, opt = init(actor, opt)
        self._check_timed_group(actor)
        self.engines = {"policy": actor}
        if critic is not None:
            critic, critic_opt = init(critic, critic_opt)
            self.engines["critic"] = critic
        return actor, opt, critic, critic_opt

    def _check_timed_group(self, engine) -> None:
        """ZeRO's collectives must run on the group `pin_deepspeed_world_group` made (with
        `distributed.timeout_minutes`); a DeepSpeed that builds another one would bring back
        torch's default timeout silently."""
        from deepspeed.utils import groups

        group = getattr(engine, "seq_data_parallel_group", None)
        if group is not None and group is not groups._WORLD_GROUP:
            raise StrategyError("this DeepSpeed version runs ZeRO on a process group vineppo did not create, so "
                                "distributed.timeout_minutes would not apply to it; use DeepSpeed 0.19")

    def unwrap(self, model):
        return getattr(model, "module", model)

    @property
    def plain_modules(self) -> bool:
        return False  # DeepSpeed hooks live on the module and its parameters

    def load_dtype(self, stored: torch.dtype | None = None) -> torch.dtype:
        """bf16 when DeepSpeed trains in bf16: it casts the module to bf16 itself and keeps its own
        fp32 master partitions, so an fp32 load would only double the host RAM at start-up
        (≈ 28 GB instead of 14 GB per rank at 7B)."""
        return torch.bfloat16 if self.ds_config()["bf16"]["enabled"] else torch.float32

    def accumulate(self, *models):
        return contextlib.nullcontext()

    def backward(self, model, loss: torch.Tensor) -> None:
        model.backward(loss)  # scales by 1 / gradient_accumulation_steps itself

    @property
    def sync_gradients(self) -> bool:
        return self._boundary

    def optimizer_step(self, model, opt, max_norm: float) -> float | None:
        self._boundary = bool(model.is_gradient_accumulation_boundary())
        model.step()  # at the boundary: clip (this engine's own norm), step, zero grads
        if not self._boundary:
            return None
        n = model.get_global_grad_norm()
        return None if n is None else float(n)

    @contextlib.contextmanager
    def _full(self, tensors):
        """ZeRO-3: gather the partitioned parameters among `tensors` (all ranks together), as
        DeepSpeed's `GatheredParameters` does; ZeRO-2's parameters are full already."""
        params = [t for t in tensors if hasattr(t, "ds_id")]
        if not params:
            yield list(tensors)
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            yield [t.data for t in tensors]

    def save_state(self, out_dir: Path, schedulers: dict) -> None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, engine in self.engines.items():
            sched = schedulers.get(name)
            engine.save_checkpoint(str(out_dir / name), tag="state", save_latest=False,
                                   client_state={"scheduler": sched.state_dict() if sched is not None else None})
        torch.save(_rng_state(), out_dir / f"rng_state_{self.acc.process_index}.pt")
        self._write_info(out_dir)

    def load_state(self, in_dir: Path, schedulers: dict) -> None:
        in_dir = Path(in_dir)
        self._check_info(in_dir)
        for name, engine in self.engines.items():
            path, client = engine.load_checkpoint(str(in_dir / name), tag="state")
            if path is None:
                raise StrategyError(f"no DeepSpeed state for the {name} in {in_dir / name}")
            sched = schedulers.get(name)
            if sched is not None and client.get("scheduler") is not None:
                sched.load_state_dict(client["scheduler"])
        rng = in_dir / f"rng_state_{self.acc.process_index}.pt"
        if rng.is_file():
            _set_rng_state(torch.load(rng, weights_only=False))
