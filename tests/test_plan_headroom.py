"""vineppo plan's margins: the headroom rule on hand-computed numbers, the NCCL term per
communicator, the GPU it plans for by default, the regenerated plan table in the docs, the check of
free GPU memory before the vLLM engine starts, and the Slurm stop lead."""

from __future__ import annotations

import io
import json
import types
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from vineppo.cli import main
from vineppo.config import EngineConfig, load_config
from vineppo.plan import (GIB, H100_80GB_BYTES, Launch, MemoryPlanError, Phase, Plan, check_engine_memory,
                          device_capacity, engine_share_shortfall, make_plan, nccl_bytes, nccl_communicators,
                          plan_memory, read_launch, required_headroom, stop_lead_seconds)
from vineppo.plan import tables
from vineppo.plan.memory import NCCL_COMM_BYTES, NVLS_COMM_BYTES

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
PAPER = ROOT / "configs" / "paper"
MIB = 2**20


def _plan(capacity: int, peak: int, kv_tokens: int = 1000) -> Plan:
    return Plan(launch=Launch("x", "single", 1), capacity=capacity, phases=[Phase("rollout", {"a": peak})],
                policy_params=1, critic_params=0, trainable_params=1, kv_cache_tokens=kv_tokens,
                concurrent_sequences=1, host_load_per_node=0, host_push_per_node=0, host_resident_per_node=0,
                max_gpu_memory_utilization=None)


# ---- the headroom rule ---------------------------------------------------------------------------
def test_required_headroom_by_hand():
    assert required_headroom(40 * GIB) == 3 * GIB                  # 4 % = 1.6 GiB < 3 GiB
    assert required_headroom(75 * GIB) == 3 * GIB                  # 4 % = 3.0 GiB: the two meet
    assert required_headroom(100 * GIB) == 4 * GIB                 # 4 % = 4 GiB
    assert required_headroom(H100_80GB_BYTES) == int(0.04 * int(79.1 * GIB))  # 3.164 GiB
    assert H100_80GB_BYTES == int(79.1 * GIB)


@pytest.mark.parametrize("capacity,peak,fits", [
    (100 * GIB, 96 * GIB, True),             # exactly 4 GiB free: enough
    (100 * GIB, 96 * GIB + 1, False),        # one byte less
    (40 * GIB, 37 * GIB, True),              # exactly 3 GiB free on a small GPU
    (40 * GIB, 37 * GIB + MIB, False),
    (80 * GIB, 79 * GIB, False),             # under the capacity is not enough any more
])
def test_fits_only_with_the_headroom_free(capacity, peak, fits):
    plan = _plan(capacity, peak)
    assert plan.headroom == capacity - peak
    assert plan.fits is fits
    out = plan.to_json()
    assert out["headroom_gib"] == round((capacity - peak) / GIB, 2)
    assert out["required_headroom_gib"] == round(required_headroom(capacity) / GIB, 2)
    assert _plan(capacity, peak, kv_tokens=0).fits is False  # no KV cache: never fits


# ---- NCCL ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,communicators,nvls", [
    ("single_gpu.yaml", 0, False), ("ddp_4gpu.yaml", 1, True), ("fsdp_8gpu.yaml", 1, True),
    ("zero2_4gpu.yaml", 2, True), ("zero2_8gpu.yaml", 2, True), ("zero2_8gpu_offload.yaml", 2, True),
    ("zero3_8gpu.yaml", 2, True), ("multinode_2x8.yaml", 2, True),
])
def test_nccl_term_per_communicator(name, communicators, nvls):
    launch = read_launch(LAUNCH / name)
    assert nccl_communicators(launch) == communicators
    assert nccl_bytes(launch) == communicators * (int(0.7 * GIB) + (288 * MIB if nvls else 0))


def test_nccl_term_is_resident_in_every_phase_and_nvls_needs_three_gpus_on_a_node():
    assert NCCL_COMM_BYTES == int(0.7 * GIB) and NVLS_COMM_BYTES == 301989888  # nccl / vLLM logs
    two = Launch("d", "ddp", 2)
    assert nccl_bytes(two) == int(0.7 * GIB)  # no NVLS with 2 GPUs
    assert nccl_bytes(Launch("z", "zero3", 16, machines=8)) == 2 * int(0.7 * GIB)  # 2 per node
    from vineppo.plan.tables import architecture_shape
    shape = architecture_shape("realtreetune/rho-1b-sft-MATH")
    cfg = load_config(PAPER / "rho1b_math_ppo.yaml")
    z2 = plan_memory(shape, cfg, read_launch(LAUNCH / "zero2_4gpu.yaml"), 80 * GIB)
    assert all(p.parts["nccl"] == 2 * (int(0.7 * GIB) + 288 * MIB) for p in z2.phases)
    single = plan_memory(shape, cfg, read_launch(LAUNCH / "single_gpu.yaml"), 80 * GIB)
    assert all("nccl" not in p.parts for p in single.phases)
    assert z2.to_json()["nccl_communicators"] == 2


# ---- the GPU a plan is for -----------------------------------------------------------------------
def _cli_json(*argv) -> tuple[int, dict]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["plan", *argv, "--json"])
    return rc, json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def rho_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rho")
    (d / "config.json").write_text(json.dumps(tables.RHO_1B))
    return str(d)


def test_default_gpu_memory_is_the_device_or_an_h100(rho_dir, monkeypatch):
    import torch

    cfg = str(PAPER / "rho1b_math_vineppo.yaml")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_capacity()[0] == H100_80GB_BYTES
    rc, out = _cli_json("--config", cfg, f"model.name_or_path={rho_dir}")
    assert rc == 0 and out["capacity_gib"] == 79.1 and any("80 GB H100" in n for n in out["notes"])
    # a CUDA device: its own total, no note
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: types.SimpleNamespace(total_memory=int(139.8 * GIB)))
    rc, out = _cli_json("--config", cfg, f"model.name_or_path={rho_dir}")
    assert out["capacity_gib"] == 139.8 and not any("H100" in n for n in out["notes"])
    # an explicit --gpu-memory wins
    rc, out = _cli_json("--config", cfg, "--gpu-memory", "40", f"model.name_or_path={rho_dir}")
    assert out["capacity_gib"] == 40.0


def test_plan_text_states_the_headroom(rho_dir, capsys):
    assert main(["plan", "--config", str(PAPER / "rho1b_math_vineppo.yaml"), "--launch",
                 str(LAUNCH / "ddp_4gpu.yaml"), "--gpu-memory", "80", f"model.name_or_path={rho_dir}"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("verdict: fits") and "3.2 needed" in last


# ---- the plan table in the docs ------------------------------------------------------------------
@pytest.fixture(scope="module")
def rows():
    return tables.plan_rows()


@pytest.fixture(scope="module")
def block(rows):
    return tables.render(rows)


def test_every_plan_table_in_the_docs_is_regenerated(block):
    """launch/README.md (and any page that carries the markers: README.md, docs/) holds the block
    `python -m vineppo.plan.tables --write` makes from the paper configs and the planner; a change
    of either without regenerating fails here."""
    pages = tables.pages_with_block()
    assert LAUNCH / "README.md" in pages
    assert tables.stale_files(pages, block) == [], "stale plan table: python -m vineppo.plan.tables --write"


def test_the_block_has_a_row_per_paper_run_with_its_plan(block):
    rows = [ln for ln in block.splitlines() if ln.startswith("| ") and not ln.startswith("| run ")]
    assert len(rows) == len(tables.paper_runs())
    row = next(r for r in rows if r.startswith("| rho1b_math_ppo | `ddp_4gpu.yaml` |"))
    shape = tables.architecture_shape("realtreetune/rho-1b-sft-MATH")
    cfg = load_config(PAPER / "rho1b_math_ppo.yaml")
    plan = make_plan(shape, cfg, read_launch(LAUNCH / "ddp_4gpu.yaml"), H100_80GB_BYTES)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == f"{plan.peak / GIB:.1f}"  # the rollout is Rho PPO's peak
    assert cells[5] == f"yes ({plan.headroom / GIB:.1f})"
    assert cells[6] == f"0.4 / {plan.max_gpu_memory_utilization}"


def test_a_stale_or_missing_block_is_caught(tmp_path, rows, block, monkeypatch, capsys):
    page = tmp_path / "page.md"
    page.write_text(f"# a page\n\n{block}\n\nafter\n")
    assert tables.stale_files([page], block) == []
    page.write_text(page.read_text().replace("| rho1b_math_ppo | `ddp_4gpu.yaml` | ", "| rho1b_math_ppo | `ddp_4gpu.yaml` | 1"))
    assert tables.stale_files([page], block) == [page]
    monkeypatch.setattr(tables, "plan_rows", lambda *a, **k: rows)  # planned once for the module
    assert tables.main(["--check", str(page)]) == 1
    assert tables.main(["--write", str(page)]) == 0
    assert tables.main(["--check", str(page)]) == 0
    assert page.read_text().startswith("# a page\n\n") and page.read_text().endswith("\n\nafter\n")
    # pages that carry the block are found (README.md, docs/, launch/), others left alone
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "gpus.md").write_text(f"{tables.BEGIN}\n{tables.END}\n")
    (tmp_path / "README.md").write_text("no table here\n")
    assert tables.pages_with_block(tmp_path) == [tmp_path / "docs" / "gpus.md"]
    (tmp_path / "none.md").write_text("no markers\n")
    assert tables.main(["--check", str(tmp_path / "none.md")]) == 2
    assert "plan-table:begin" in capsys.readouterr().err


def test_a_config_without_a_launch_file_in_its_header_is_an_error(tmp_path):
    (tmp_path / "x.yaml").write_text("# no command here\nalgorithm: vineppo\n")
    with pytest.raises(Exception, match="names no launch"):
        tables.paper_runs(tmp_path)


# ---- free GPU memory before the engine starts ----------------------------------------------------
def test_engine_share_shortfall_by_hand():
    total = 80 * GIB
    assert engine_share_shortfall(40 * GIB, total, 0.5) is None        # exactly the share is free
    msg = engine_share_shortfall(39 * GIB, total, 0.5)
    assert msg is not None and "short by 1.0 GiB" in msg
    # the largest share that leaves max(3 GiB, 4 % = 3.2 GiB) free: floor(100 (39 - 3.2) / 80) / 100
    assert "engine.gpu_memory_utilization=0.44 " in msg
    assert "model.reference_offload=true" in msg and "vineppo plan" in msg
    assert "no smaller engine share" in engine_share_shortfall(3 * GIB, total, 0.5)
    with pytest.raises(ValueError):
        engine_share_shortfall(1, total, 0)


def test_engine_is_not_built_when_the_share_is_not_free(monkeypatch):
    """make_engine on CUDA (faked): mem_get_info shows less free memory than the share, so it stops
    with the advice before vLLM is touched; with enough free memory it goes on to build."""
    import torch

    import vineppo.engine.factory as factory

    built = []
    fake_vllm = types.ModuleType("vineppo.engine.vllm")
    fake_vllm.VLLMEngine = lambda *a, **k: built.append(k) or types.SimpleNamespace()
    monkeypatch.setitem(__import__("sys").modules, "vineppo.engine.vllm", fake_vllm)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (30 * GIB, 80 * GIB))
    cfg = EngineConfig(backend="vllm", gpu_memory_utilization=0.4)
    with pytest.raises(MemoryPlanError, match="engine.gpu_memory_utilization=0.4 needs 32.0 GiB"):
        factory.make_engine(cfg, model_path="m", tokenizer=None)
    assert built == []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (33 * GIB, 80 * GIB))
    factory.make_engine(cfg, model_path="m", tokenizer=None)
    assert len(built) == 1 and built[0]["gpu_memory_utilization"] == 0.4
    # without CUDA nothing is checked
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_engine_memory(0.99)


# ---- Slurm stop lead -----------------------------------------------------------------------------
def test_stop_lead_by_model_size():
    assert stop_lead_seconds(1_100_048_384) == 900      # Rho-1.1B
    assert stop_lead_seconds(6_910_365_696) == 3600     # DeepSeekMath 7B: an hour
    assert stop_lead_seconds(70_000_000_000) == 7200
