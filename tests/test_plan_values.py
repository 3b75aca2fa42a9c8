"""The planner's inputs and verdict at their edges (vineppo/plan/), values by hand: the launch of
this process read from `accelerate launch`'s environment, and the Slurm stop lead at each limit."""

from __future__ import annotations

import pytest

from vineppo.plan.advice import stop_lead_seconds
from vineppo.plan.inputs import Launch, launch_from_env

LAUNCH_KEYS = ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE",
               "ACCELERATE_DEEPSPEED_CONFIG_FILE", "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
               "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "ACCELERATE_USE_FSDP", "FSDP_VERSION",
               "FSDP_OFFLOAD_PARAMS", "FSDP_CPU_RAM_EFFICIENT_LOADING")


@pytest.fixture
def env(monkeypatch):
    for k in LAUNCH_KEYS:
        monkeypatch.delenv(k, raising=False)

    def set_(**kv):
        for k, v in kv.items():
            monkeypatch.setenv(k, v)
    return set_


def test_launch_from_a_plain_process(env):
    assert launch_from_env() == Launch("environment", "single", 1, 1, False, False)


def test_launch_from_two_nodes_of_four_with_zero3_offload(env):
    env(WORLD_SIZE="8", LOCAL_WORLD_SIZE="4", ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE="3",
        ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE="cpu", ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE="cpu")
    lau = launch_from_env()
    assert lau == Launch("environment", "zero3", 8, 2, offload_optimizer=True, offload_params=True)
    assert lau.per_node == 4


def test_launch_from_fsdp_with_offload_and_ddp_on_one_node(env):
    env(WORLD_SIZE="2", ACCELERATE_USE_FSDP="true", FSDP_VERSION="2", FSDP_OFFLOAD_PARAMS="True")
    # no LOCAL_WORLD_SIZE: one node
    assert launch_from_env() == Launch("environment", "fsdp", 2, 1, offload_optimizer=False, offload_params=True)
    env(ACCELERATE_USE_FSDP="false", FSDP_OFFLOAD_PARAMS="false", ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE="nvme")
    assert launch_from_env() == Launch("environment", "ddp", 2, 1, offload_optimizer=False, offload_params=False)


@pytest.mark.parametrize("params, lead", [
    (1, 900), (3_000_000_000, 900), (3_000_000_001, 3600), (10_000_000_000, 3600), (10_000_000_001, 7200),
    (70_000_000_000, 7200)])
def test_stop_lead_at_each_limit(params, lead):
    assert stop_lead_seconds(params) == lead
