"""`vineppo plan`'s advice (vineppo/plan/advice.py `suggest`, `refusal`): the order in which single
changes are tried, by hand. The memory model is replaced by a rule saying which configs fit, so
that each test names the one change that must come out (the memory model has its own tests:
tests/test_plan.py, test_plan_headroom.py, test_plan_values.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import vineppo.plan.advice as advice
from vineppo.config import LoraConfig, TrainConfig
from vineppo.plan import GIB
from vineppo.plan.inputs import Launch

SHAPE = object()  # the fake memory model ignores it
HERE = Launch("a.yaml", "ddp", 2, 1)


def _fits_when(monkeypatch, rule):
    """plan_memory -> a plan that fits exactly when rule(cfg, launch) holds (with a KV cache for
    16 sequences), and records every (cfg, launch) it was asked about."""
    asked = []

    def plan_memory(shape, cfg, launch, capacity):
        asked.append((cfg, launch))
        return SimpleNamespace(fits=bool(rule(cfg, launch)), concurrent_sequences=16, max_gpu_memory_utilization=None)

    monkeypatch.setattr(advice, "plan_memory", plan_memory)
    return asked


def _cfg(micro_batch: int = 12, lora: bool = False, reference_offload: bool = False) -> TrainConfig:
    cfg = TrainConfig()
    cfg.ppo.micro_batch_size = micro_batch
    cfg.model.lora = LoraConfig() if lora else None
    cfg.model.reference_offload = reference_offload
    return cfg


def _launch_file(path, processes: int, machines: int = 1):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"distributed_type: MULTI_GPU\nnum_processes: {processes}\nnum_machines: {machines}\n")
    return path


def test_a_run_that_fits_gets_no_suggestion(monkeypatch):
    _fits_when(monkeypatch, lambda cfg, launch: True)
    assert advice.suggest(SHAPE, _cfg(), HERE, 80 * GIB) is None


@pytest.mark.parametrize("fits_at, expect", [(6, "ppo.micro_batch_size=6"), (3, "ppo.micro_batch_size=3"),
                                             (1, "ppo.micro_batch_size=1"), (0, None)])
def test_micro_batches_are_halved_down_to_one(monkeypatch, fits_at, expect):
    # 12 -> 6 -> 3 -> 1 (integer halves): the first that fits; none below 1
    asked = _fits_when(monkeypatch, lambda cfg, launch: cfg.ppo.micro_batch_size <= fits_at)
    cfg = _cfg(micro_batch=12, lora=True)  # LoRA: no reference offload to try
    got = advice.suggest(SHAPE, cfg, HERE, 80 * GIB)
    assert got == (expect or "nothing tried fits: more or larger GPUs, or a smaller model")
    sizes = [c.ppo.micro_batch_size for c, _ in asked[1:]]
    assert sizes == [6, 3, 1][: len(sizes)] and all(type(s) is int for s in sizes)
    assert cfg.ppo.micro_batch_size == 12  # the caller's config is not changed by the tries


def test_reference_offload_is_tried_first_without_lora_only(monkeypatch):
    _fits_when(monkeypatch, lambda cfg, launch: cfg.model.reference_offload)
    assert advice.suggest(SHAPE, _cfg(), HERE, 80 * GIB) == "model.reference_offload=true"
    # LoRA's reference is the adapter turned off: nothing to offload, so it is never suggested
    assert advice.suggest(SHAPE, _cfg(lora=True), HERE, 80 * GIB).startswith("nothing tried fits")


def test_another_launch_file_fewest_processes_first_then_by_name(monkeypatch, tmp_path):
    _fits_when(monkeypatch, lambda cfg, launch: launch.name != "a.yaml")
    files = [_launch_file(tmp_path / "z" / "b.yaml", 4), _launch_file(tmp_path / "y" / "d.yaml", 8),
             _launch_file(tmp_path / "a" / "c.yaml", 4)]
    # fewest processes: b and c (4); then by name: b (its path sorts after c's)
    assert advice.suggest(SHAPE, _cfg(lora=True), HERE, 80 * GIB, files) == f"--config_file {files[0]}"
    files.append(_launch_file(tmp_path / "x" / "e.yaml", 2))
    assert advice.suggest(SHAPE, _cfg(lora=True), HERE, 80 * GIB, files) == f"--config_file {files[3]}"


def test_a_same_named_launch_keeps_the_callers_order(monkeypatch, tmp_path):
    _fits_when(monkeypatch, lambda cfg, launch: launch.name != "a.yaml")
    files = [_launch_file(tmp_path / "2" / "b.yaml", 4), _launch_file(tmp_path / "1" / "b.yaml", 4)]
    assert advice.suggest(SHAPE, _cfg(lora=True), HERE, 80 * GIB, files) == f"--config_file {files[0]}"


def test_launch_files_not_offered_the_current_one_several_machines_and_unreadable_ones(monkeypatch, tmp_path):
    _fits_when(monkeypatch, lambda cfg, launch: launch.name != "a.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- not a mapping\n")
    files = [bad, _launch_file(tmp_path / "a.yaml", 1),                # unreadable; the current launch's name
             _launch_file(tmp_path / "two_nodes.yaml", 2, machines=2),  # two machines: not a single change
             _launch_file(tmp_path / "b.yaml", 4)]
    assert advice.suggest(SHAPE, _cfg(lora=True), HERE, 80 * GIB, files) == f"--config_file {files[3]}"


def test_another_launch_file_with_reference_offload_last_and_without_lora_only(monkeypatch, tmp_path):
    _fits_when(monkeypatch, lambda cfg, launch: cfg.model.reference_offload and launch.name == "b.yaml")
    files = [_launch_file(tmp_path / "b.yaml", 4)]
    assert (advice.suggest(SHAPE, _cfg(), HERE, 80 * GIB, files)
            == f"--config_file {files[0]} with model.reference_offload=true")
    assert advice.suggest(SHAPE, _cfg(lora=True), HERE, 80 * GIB, files).startswith("nothing tried fits")


def test_refusal_says_the_numbers_in_gib(monkeypatch):
    plan = SimpleNamespace(fits=False, peak=int(90.25 * GIB), peak_phase="train", required_headroom=int(3.2 * GIB),
                           suggestion="ppo.micro_batch_size=4")
    monkeypatch.setattr(advice, "make_plan", lambda *a, **kw: plan)
    monkeypatch.setattr(advice, "launch_files", lambda: [])
    assert advice.refusal(_cfg(), SHAPE, HERE, 80 * GIB) == (
        "this run needs 90.2 GiB per GPU in its train phase, the GPU has 80.0 GiB of which 3.2 must stay free "
        "(NCCL, fragmentation; vineppo plan shows every phase); change: ppo.micro_batch_size=4 "
        "(or distributed.memory_check=false to start anyway)")
    plan.fits = True
    assert advice.refusal(_cfg(), SHAPE, HERE, 80 * GIB) is None


def test_a_change_that_fits_with_few_sequences_also_names_the_largest_engine_share(monkeypatch):
    # max_num_seqs 4: a plan with 5 concurrent sequences fits meaningfully (>= min(8, 4)) but is below
    # the 8 the planner wants: the suggestion also names the largest share that keeps the headroom
    def plan_memory(shape, cfg, launch, capacity):
        small = cfg.ppo.micro_batch_size <= 6
        return SimpleNamespace(fits=small, concurrent_sequences=5, max_gpu_memory_utilization=0.55 if small else None)

    monkeypatch.setattr(advice, "plan_memory", plan_memory)
    cfg = _cfg(micro_batch=12, lora=True)
    cfg.engine.max_num_seqs = 4
    assert (advice.suggest(SHAPE, cfg, HERE, 80 * GIB)
            == "ppo.micro_batch_size=6 and engine.gpu_memory_utilization=0.55")

    # when the change is the engine's share itself, it is not named twice
    def plan_memory(shape, cfg, launch, capacity):
        ok = cfg.engine.gpu_memory_utilization == 0.55
        return SimpleNamespace(fits=ok, concurrent_sequences=5, max_gpu_memory_utilization=0.55)

    monkeypatch.setattr(advice, "plan_memory", plan_memory)
    assert advice.suggest(SHAPE, cfg, HERE, 80 * GIB) == "engine.gpu_memory_utilization=0.55"

    # with 8 sequences or more, nothing is added
    def plan_memory(shape, cfg, launch, capacity):
        small = cfg.ppo.micro_batch_size <= 6
        return SimpleNamespace(fits=small, concurrent_sequences=8, max_gpu_memory_utilization=0.55)

    monkeypatch.setattr(advice, "plan_memory", plan_memory)
    assert advice.suggest(SHAPE, cfg, HERE, 80 * GIB) == "ppo.micro_batch_size=6"


def test_make_plan_of_a_run_that_fits_has_no_suggestion(monkeypatch):
    # it fits, with fewer sequences than the planner likes: make_plan does not go looking for a change
    monkeypatch.setattr(advice, "plan_memory", lambda shape, cfg, launch, capacity: SimpleNamespace(
        fits=True, concurrent_sequences=1, max_gpu_memory_utilization=0.5))
    plan = advice.make_plan(SimpleNamespace(params=7_000_000_000), _cfg(), HERE, 80 * GIB)
    assert plan.suggestion is None and plan.stop_lead_s == 3600
