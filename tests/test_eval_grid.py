"""The evaluation grid (`vineppo eval --every`, `vineppo compare --iteration-grid`), the eval
engine's memory share, loading checkpoints from their directories, and several checkpoints
evaluated side by side in worker processes (equal to the one-process sweep)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vineppo.checkpoint import write_manifest
from vineppo.compare import CompareError, compare, load_run
from vineppo.evaluate import EVAL_GPU_MEMORY_UTILIZATION, engine_config, evaluate_run, write_results
from vineppo.evaluate.grid import GridError, check_grid, default_grid, on_grid, save_interval
from vineppo.evaluate.parallel import assign, device_groups

FAST = dict(n_samples=2, max_new_tokens=6, max_problems=2, progress=False)


def test_grid_rules():
    assert [it for it in range(0, 131, 10) if on_grid(it, 40, 130)] == [0, 40, 80, 120, 130]
    assert all(on_grid(it, None, 130) for it in (10, 30))
    assert save_interval({"save_every": 40}, [5]) == 40
    assert save_interval({}, [10, 20, 30, 35]) == 10  # the last (always saved) excluded
    assert default_grid([10, 40, None]) == 40 and default_grid([None]) is None
    check_grid(40, 10, "run", "--every")
    with pytest.raises(GridError, match="every 40 iterations.*--iteration-grid 40"):
        check_grid(10, 40, "ppo (ppo)", "--iteration-grid")


def test_assignment_and_devices():
    assert assign(list(range(7)), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert assign([1], 4) == [[1]]
    assert device_groups(["0", "1", "2", "3", "4"], 2) == ["0,1", "2,3"]
    assert device_groups([str(i) for i in range(8)], 1) == [str(i) for i in range(8)]


def test_eval_engine_share_is_not_the_runs():
    run_cfg = {"engine": {"gpu_memory_utilization": 0.3, "max_num_seqs": 64}}
    cfg = engine_config(run_cfg, "x")
    assert cfg.gpu_memory_utilization == EVAL_GPU_MEMORY_UTILIZATION == 0.9 and cfg.max_num_seqs == 64
    assert engine_config(run_cfg, "x", gpu_memory_utilization=0.5).gpu_memory_utilization == 0.5


def _run(root: Path, name: str, algorithm: str, save_every: int, last: int, val: dict[int, float]) -> Path:
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(f"algorithm: {algorithm}\nsave_every: {save_every}\ndata:\n  task: gsm8k\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "seconds": 1.0}) + "\n"
                                               for i in range(1, last + 1)))
    for it in range(save_every, last + 1, save_every):
        for split in ("validation", "test"):
            write_results(run / "checkpoints" / f"iter_{it:06d}" / "eval" / split,
                          {"pass@1": val.get(it, 0.1), "iteration": it, "split": split, "max_problems": None}, [])
    return run


def test_compare_judges_every_run_on_the_coarsest_grid(tmp_path):
    # VinePPO's best validation draw (iteration 30) is off PPO's 40-iteration grid.
    vine = _run(tmp_path, "vine", "vineppo", 10, 120, {30: 0.9, 40: 0.5, 80: 0.6})
    ppo = _run(tmp_path, "ppo", "ppo", 40, 120, {40: 0.3, 80: 0.4})
    result = compare([vine, ppo], tmp_path / "cmp", print_table=False)
    by = {s.label: s for s in result.summaries}
    assert by["vine"].selected_iteration == 80 and by["ppo"].selected_iteration == 80
    assert "divisible by 40" in (tmp_path / "cmp" / "compare.md").read_text()
    assert compare([vine, ppo], tmp_path / "cmp", print_table=False, iteration_grid=120).summaries[0] \
        .selected_iteration == 120
    with pytest.raises(CompareError, match=r"ppo \(ppo\) saved a checkpoint every 40"):
        compare([vine, ppo], tmp_path / "cmp", print_table=False, iteration_grid=10)
    assert best_iterations(load_run(vine)) == list(range(10, 121, 10))  # unfiltered on load


def best_iterations(run):
    return sorted(run.evals["validation"])


def test_compare_cli_refuses_a_finer_grid(tmp_path, capsys):
    from vineppo.cli import main

    vine = _run(tmp_path, "vine", "vineppo", 10, 40, {})
    ppo = _run(tmp_path, "ppo", "ppo", 40, 40, {})
    assert main(["compare", str(vine), str(ppo), "--output-dir", str(tmp_path / "c"), "--iteration-grid", "10"]) == 2
    assert "ppo (ppo) saved a checkpoint every 40 iterations" in capsys.readouterr().err


def _eval_run(root: Path, tiny_model_dir: Path, data_dir: Path, iterations, save_every: int) -> Path:
    from test_evaluate import _fake_run

    return _fake_run(root, tiny_model_dir, data_dir, iterations, save_every=save_every)


def test_eval_every_keeps_the_grid_and_the_last(tiny_model_dir, shared_data_dir, tmp_path, one_torch_thread):
    run = _eval_run(tmp_path, tiny_model_dir, shared_data_dir / "gsm8k", [10, 20, 30, 40, 50], 10)
    with pytest.raises(GridError, match="--every 10"):
        evaluate_run(run, split="test", every=15, **FAST)
    done = evaluate_run(run, split="test", every=20, **FAST)
    assert [r["iteration"] for r in done] == [20, 40, 50]


def _samples(run: Path) -> dict:
    return {p.parent.parent.parent.name: p.read_text() for p in sorted(run.glob("checkpoints/*/eval/test/samples.jsonl"))}


@pytest.mark.slow
def test_two_worker_processes_equal_the_sequential_sweep(tiny_model_dir, shared_data_dir, tmp_path, one_torch_thread):
    import torch
    from transformers import AutoModelForCausalLM

    run = _eval_run(tmp_path, tiny_model_dir, shared_data_dir / "gsm8k", [1, 2, 3], 1)
    for it, scale in ((2, 1.5), (3, 0.7)):  # three different models
        d = run / "checkpoints" / f"iter_{it:06d}"
        model = AutoModelForCausalLM.from_pretrained(d)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
        model.save_pretrained(d)
        write_manifest(d, it)
    sequential = evaluate_run(run, split="test", workers=1, **FAST)
    first = _samples(run)
    parallel = evaluate_run(run, split="test", workers=2, force=True, **FAST)
    assert [r["iteration"] for r in parallel] == [r["iteration"] for r in sequential] == [1, 2, 3]
    assert [r["pass@1"] for r in parallel] == [r["pass@1"] for r in sequential]
    assert _samples(run) == first and len(set(first.values())) == 3


def test_update_weights_from_dir_loads_the_checkpoint(tiny_model_dir, tiny_tokenizer, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from vineppo.engine.hf import HFEngine

    other = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    other.save_pretrained(tmp_path / "next")
    engine = HFEngine(str(tiny_model_dir), tiny_tokenizer, progress=False)
    engine.update_weights_from_dir(tmp_path / "next")
    for k, v in other.state_dict().items():
        torch.testing.assert_close(engine.model.state_dict()[k], v)
    with pytest.raises(ValueError, match="no safetensors"):
        engine.update_weights_from_dir(tmp_path)


@pytest.mark.slow
def test_run_shares_returns_in_order_and_names_a_failure():  # ~20 s: four spawned processes import torch
    from vineppo.evaluate.parallel import run_shares

    assert run_shares(sorted, [[3, 1], [2]], [None, None]) == [[1, 3], [2]]
    with pytest.raises(RuntimeError, match="process 1 .*TypeError"):
        run_shares(sum, [[1, 2], [None]], [None, None])


def test_eval_cli_sweep_flags_need_a_run(tiny_model_dir, capsys):
    from vineppo.cli import main

    assert main(["eval", "--checkpoint", str(tiny_model_dir), "--every", "40"]) == 2
    assert "--every and --workers are for --run" in capsys.readouterr().err


def test_paper_configs_state_the_official_grid():
    from vineppo.config import ConfigError, load_config

    root = Path(__file__).resolve().parent.parent / "configs" / "paper"
    for path in sorted(root.glob("*.yaml")):
        cfg = load_config(str(path), [])
        assert cfg.eval_every == (60 if path.name.startswith("deepseekmath") else 40), path.name
        assert cfg.eval_every % cfg.save_every == 0
    with pytest.raises(ConfigError, match="eval_every must be a multiple of save_every"):
        load_config(str(root / "rho1b_gsm8k_vineppo.yaml"), ["eval_every=15"])
