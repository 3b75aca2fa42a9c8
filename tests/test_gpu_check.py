"""benchmarks/gpu_check.py's pure parts on CPU: the runner and its lines, the comparison with the
plan, the ~0.5B model's shape (built on the meta device), one-process launch files, and the
no-CUDA exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gpu_check import (Skip, compare_with_plan, format_result, half_b_llama_config,  # noqa: E402
                                  one_process_launch, run_checks, summary)


def test_runner_lines_and_summary(capsys):
    def ok():
        return "fine"

    def wrong():
        raise AssertionError("sync/logprob_gap 0.3 > 0.01\nsecond line")

    def broken():
        raise KeyError("x")

    def skipped():
        raise Skip("flash-attn is not installed")

    results = run_checks([("a", ok), ("b", wrong), ("c", broken), ("d", skipped)])
    assert [r.ok for r in results] == [True, False, False, None]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("PASS a (") and lines[0].endswith("): fine")
    assert lines[1].startswith("FAIL b (") and lines[1].endswith("AssertionError: sync/logprob_gap 0.3 > 0.01")
    assert lines[2].startswith("FAIL c (") and "KeyError" in lines[2]
    assert lines[3].startswith("SKIP d (")
    assert summary(results) == "gpu_check: 1 passed, 2 failed"
    assert format_result(results[0]) == lines[0]


def test_compare_with_plan_tolerance():
    gib = 2**30
    out = compare_with_plan({"train": 10 * gib, "rollout": 10 * gib}, {"train": 12 * gib, "rollout": 13 * gib},
                            tolerance=0.25)
    assert [(name, ok) for name, ok, _ in out] == [("train", True), ("rollout", False)]
    assert "plan/measured 1.20" in out[0][2] and "plan/measured 1.30" in out[1][2]
    under = compare_with_plan({"train": 10 * gib}, {"train": 7 * gib}, tolerance=0.25)
    assert under[0][1] is False  # a plan 30 % under the measurement fails too


def test_half_b_model_shape_on_meta():
    from vineppo.plan import shape_from_config

    s = shape_from_config(half_b_llama_config())
    by_hand = 2 * 32000 * 1280 + 24 * (4 * 1280 * 1280 + 3 * 1280 * 3456 + 2 * 1280) + 1280
    assert s.params == by_hand == 557_774_080
    assert (s.layers, s.hidden, s.vocab) == (24, 1280, 32000)


@pytest.mark.parametrize("name,strategy", [("fsdp_8gpu.yaml", "fsdp"), ("zero2_8gpu.yaml", "zero2"),
                                           ("zero3_8gpu.yaml", "zero3"), ("single_gpu.yaml", "single")])
def test_one_process_launch_keeps_the_strategy(tmp_path, name, strategy):
    from vineppo.plan import read_launch

    out = read_launch(one_process_launch(ROOT / "launch" / name, tmp_path / name))
    assert (out.strategy, out.processes) == (strategy, 1)


def test_without_cuda_nothing_is_checked():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0
    assert proc.stdout.strip().splitlines() == ["gpu_check: no CUDA device, nothing checked"]


def test_every_training_check_is_a_valid_run(tmp_path):
    """Each training check's config + overrides loads and validates as `vineppo train` would read
    it, its launch file exists, and together they cover VinePPO, PPO and GRPO under every strategy."""
    from benchmarks.gpu_check import FLASH_RUN, FULL_RUNS, TRAIN_CONFIG, TRAIN_RUNS, training_runs, train_overrides
    from vineppo.config import load_config
    from vineppo.plan import read_launch

    seen = set()
    assert len({r[0] for r in training_runs(True)}) == len(training_runs(True)) == 4 + 9
    full = {(read_launch(ROOT / "launch" / r[2]).strategy, r[1]) for r in FULL_RUNS}
    assert full == {(s, a) for s in ("fsdp", "zero2", "zero3") for a in ("vineppo", "ppo", "grpo")}
    for name, algorithm, launch, extra in [*TRAIN_RUNS, *FULL_RUNS, FLASH_RUN]:
        cfg = load_config(TRAIN_CONFIG, train_overrides(tmp_path / "m", tmp_path / "d", algorithm) + extra)
        assert cfg.algorithm == algorithm and cfg.model.dtype == "bfloat16" and cfg.engine.backend == "vllm"
        strategy = read_launch(ROOT / "launch" / launch).strategy if launch else "single"
        seen.add((strategy, algorithm))
        if name == "lora_adapter_sync":
            assert cfg.model.lora is not None and cfg.model.lora.sync == "adapter"
        if name.endswith("reference_offload"):
            assert cfg.model.reference_offload
    assert {a for s, a in seen if s == "single"} == {"vineppo", "ppo", "grpo"}
    assert {s for s, _ in seen} == {"single", "fsdp", "zero2", "zero3"}
    assert [r[0] for r in training_runs(False)] == [r[0] for r in TRAIN_RUNS]
