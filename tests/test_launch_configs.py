"""launch/: every accelerate config parses with accelerate's own loader and passes `accelerate
launch`'s argument validation (no GPU needed); key fields are what launch/README.md promises; the
Slurm script is valid bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[1] / "launch"

# file -> (distributed_type, processes, machines, ZeRO stage, optimizer offload, FSDP sharding)
EXPECTED = {
    "single_gpu.yaml": ("NO", 1, 1, None, None, None),
    "ddp_4gpu.yaml": ("MULTI_GPU", 4, 1, None, None, None),
    "zero2_4gpu.yaml": ("DEEPSPEED", 4, 1, 2, "none", None),
    "zero2_8gpu.yaml": ("DEEPSPEED", 8, 1, 2, "none", None),
    "zero2_8gpu_offload.yaml": ("DEEPSPEED", 8, 1, 2, "cpu", None),
    "zero3_8gpu.yaml": ("DEEPSPEED", 8, 1, 3, "none", None),
    "fsdp_8gpu.yaml": ("FSDP", 8, 1, None, None, "FSDP2"),
    "multinode_2x8.yaml": ("DEEPSPEED", 16, 2, 2, "none", None),
}


def test_every_yaml_is_covered():
    assert sorted(p.name for p in LAUNCH.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_loads_config(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    dist, procs, machines, zero, offload, sharding = EXPECTED[name]
    cfg = load_config_from_file(str(LAUNCH / name))
    assert isinstance(cfg, ClusterConfig)
    assert cfg.distributed_type.value == dist
    assert cfg.num_processes == procs and cfg.num_machines == machines
    assert cfg.mixed_precision == "bf16"
    assert cfg.use_cpu is False
    if zero is not None:
        ds = cfg.deepspeed_config
        assert ds["zero_stage"] == zero and ds["offload_optimizer_device"] == offload
        assert ds["offload_param_device"] == "none" and ds["gradient_clipping"] == 1.0
        # left to the trainer (64 / (GPUs × micro-batch)); a fixed value here would override it
        assert "gradient_accumulation_steps" not in ds
    if sharding is not None:
        fsdp = cfg.fsdp_config
        # FSDP2 (fully_shard): full sharding, resharded after forward
        assert str(fsdp["fsdp_version"]) == "2" and fsdp["fsdp_reshard_after_forward"] is True
        assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
        # the trainer deep-copies the loaded actor into the reference: every rank needs real weights
        assert fsdp["fsdp_cpu_ram_efficient_loading"] is False
    if machines > 1:
        assert cfg.deepspeed_config["deepspeed_multinode_launcher"] == "standard"
        assert cfg.main_process_port and cfg.rdzv_backend == "static"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_launch_accepts_config(name):
    """The same validation and environment `accelerate launch --config_file F -m vineppo train` builds."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    dist, procs, machines, zero, offload, sharding = EXPECTED[name]
    args = launch_command_parser().parse_args(["--config_file", str(LAUNCH / name), "-m", "vineppo", "train"])
    _validate_launch_command(args)
    assert args.num_processes == procs and args.module and args.training_script == "vineppo"
    assert args.use_deepspeed == (dist == "DEEPSPEED") and args.use_fsdp == (dist == "FSDP")
    if dist == "DEEPSPEED":
        from accelerate.commands.config.config_args import load_config_from_file

        # set by `accelerate launch` itself before it builds the environment
        args.deepspeed_fields_from_accelerate_config = list(load_config_from_file(str(LAUNCH / name)).deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(zero)
        assert env["ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"] == offload
        assert "ACCELERATE_GRADIENT_ACCUMULATION_STEPS" not in env
    elif dist in ("FSDP", "MULTI_GPU"):
        env = prepare_multi_gpu_env(args)
        assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
        if dist == "FSDP":
            assert env["ACCELERATE_USE_FSDP"] == "true"
            assert env["FSDP_VERSION"] == "2"
            assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"


def test_slurm_script_is_valid_bash():
    bash = shutil.which("bash")
    assert bash is not None
    proc = subprocess.run([bash, "-n", str(LAUNCH / "slurm.sbatch")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (LAUNCH / "slurm.sbatch").read_text()
    assert text.startswith("#!/bin/bash") and "#SBATCH" in text
    assert "--machine_rank" in text and "-m vineppo train" in text and "vineppo eval --run" in text


def test_readme_names_every_file_and_paper_config():
    readme = (LAUNCH / "README.md").read_text()
    for name in [*EXPECTED, "slurm.sbatch"]:
        assert f"`{name}`" in readme, name
    paper = LAUNCH.parent / "configs" / "paper"
    for cfg in sorted(paper.glob("*.yaml")):
        assert f"--config configs/paper/{cfg.name} --output-dir runs/{cfg.stem}" in readme, cfg.name
