"""The planner's inputs: model shapes from a config.json (exact counts, meta device) and the
strategy of an `accelerate` launch file or of the launcher's environment."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

GIB = 1024**3
STRATEGIES = ("single", "ddp", "fsdp", "zero2", "zero3")
#: the total memory an "80 GB" H100 reports (torch: "a total capacity of 79.11 GiB"): the GPU a plan
#: assumes when no CUDA device is visible, and the GPU of the plan tables (vineppo.plan.tables)
H100_80GB_BYTES = int(79.1 * GIB)


class PlanError(ValueError):
    """Bad input to the planner (file, field); the CLI exits 2 with this one line."""


# ---- shapes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    params: int              # every parameter of the causal LM (tied weights once)
    backbone_params: int     # without the LM head (the PPO critic's backbone)
    layer_params: int        # one decoder layer
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    largest_tensor: int      # elements of the largest single weight (embedding / LM head)

    @property
    def critic_params(self) -> int:
        """CriticModel: the backbone + Linear(hidden, 1)."""
        return self.backbone_params + self.hidden + 1

    @property
    def kv_bytes_per_token(self) -> int:
        """bf16 K and V of every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


def shape_from_config(hf_config) -> ModelShape:
    """Exact counts: the model is built on the meta device (no memory, no weights read)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    total = sum(p.numel() for p in model.parameters())
    backbone = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    layers = getattr(backbone, "layers", None)
    if layers is None or len(layers) == 0:
        raise PlanError(f"{type(model).__name__}: no decoder layers found (the planner knows decoder-only LMs)")
    c = hf_config
    heads = c.num_attention_heads
    return ModelShape(
        params=total, backbone_params=sum(p.numel() for p in backbone.parameters()),
        layer_params=sum(p.numel() for p in layers[0].parameters()), hidden=c.hidden_size,
        layers=len(layers), heads=heads, kv_heads=getattr(c, "num_key_value_heads", None) or heads,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads, intermediate=c.intermediate_size,
        vocab=c.vocab_size, largest_tensor=max(p.numel() for p in model.parameters()))


@functools.lru_cache(maxsize=8)
def model_shape(name_or_path: str) -> ModelShape:
    """Shapes of `model.name_or_path`: a local directory needs only its config.json (offline)."""
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.from_pretrained(name_or_path)
    except Exception as e:  # noqa: BLE001 - hub unreachable, missing or bad config.json
        raise PlanError(f"model.name_or_path {name_or_path!r}: cannot read its config.json "
                        f"({type(e).__name__}); offline, pass model.name_or_path=DIR with a config.json") from None
    return shape_from_config(hf_config)


def device_capacity() -> tuple[int, str | None]:
    """(bytes, note) of the GPU to plan for: this process's CUDA device's total memory as the device
    reports it, else `H100_80GB_BYTES` with a note saying so (`vineppo plan` without --gpu-memory)."""
    import torch

    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        return int(torch.cuda.get_device_properties(i).total_memory), None
    return H100_80GB_BYTES, (f"no CUDA device here: planned for an 80 GB H100 as it reports itself "
                             f"({H100_80GB_BYTES / GIB:.1f} GiB); --gpu-memory GIB plans for another GPU")


# ---- launch strategy ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Launch:
    name: str                   # the launch file (or "environment")
    strategy: str               # one of STRATEGIES
    processes: int
    machines: int = 1
    offload_optimizer: bool = False
    offload_params: bool = False

    @property
    def per_node(self) -> int:
        return max(1, self.processes // max(1, self.machines))


def read_launch(path: str | Path) -> Launch:
    """The strategy an `accelerate` launch file asks for (the fields vineppo/distributed.py reads)."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"launch file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise PlanError(f"{path}: not an accelerate launch file (top level must be a mapping)")
    kind = str(data.get("distributed_type", "NO"))
    n = int(data.get("num_processes", 1))
    machines = int(data.get("num_machines", 1))
    if kind == "DEEPSPEED":
        ds = data.get("deepspeed_config") or {}
        stage = int(ds.get("zero_stage", 2))
        if stage not in (2, 3):
            raise PlanError(f"{path}: zero_stage {stage} is not supported (2 or 3)")
        return Launch(path.name, f"zero{stage}", n, machines,
                      offload_optimizer=ds.get("offload_optimizer_device", "none") == "cpu",
                      offload_params=ds.get("offload_param_device", "none") == "cpu")
    if kind == "FSDP":
        fs = data.get("fsdp_config") or {}
        return Launch(path.name, "fsdp", n, machines, offload_params=bool(fs.get("fsdp_offload_params", False)))
    if kind in ("NO", "MULTI_GPU"):
        return Launch(path.name, "ddp" if n > 1 else "single", n, machines)
    raise PlanError(f"{path}: distributed_type {kind} is not one vineppo runs (NO, MULTI_GPU, FSDP, DEEPSPEED)")


def launch_from_env() -> Launch:
    """The strategy of this process's `accelerate launch` (as vineppo.distributed.launch_strategy)."""
    from vineppo.distributed import launch_strategy

    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    local = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    return Launch("environment", launch_strategy(), world, max(1, world // max(1, local)),
                  offload_optimizer=env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none") == "cpu",
                  offload_params=(env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none") == "cpu"
                                  or env.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true"))


def launch_files(directory: str | Path | None = None) -> list[Path]:
    """Launch files the suggestion may switch to: those next to the given one, else the repository's."""
    d = Path(directory) if directory is not None else Path(__file__).resolve().parents[2] / "launch"
    return sorted(d.glob("*.yaml"))
