"""benchmarks/demo_time.py: a finished demo's time split by phase, and schedule floors (fake demo dirs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.demo_time import RunTime, floor_seconds, main, read_demo  # noqa: E402

T0 = 1_700_000_000.0


def _fake_run(root: Path, name: str, seconds: list[float], saves: dict[int, float], results: list[float]) -> Path:
    """A run dir: metrics.jsonl with `seconds` per iteration (1..), a checkpoint per `saves` item
    (iteration -> its MANIFEST.json's mtime offset) and eval results at the `results` offsets (the
    last checkpoint's test and validation, then the others)."""
    run = root / name
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "seconds": s}) + "\n"
                                               for i, s in enumerate(seconds, 1)) + "\n")
    for it, at in saves.items():
        c = run / "checkpoints" / f"iter_{it:06d}"
        (c / "eval" / "test").mkdir(parents=True)
        (c / "MANIFEST.json").write_text("{}")
        os.utime(c / "MANIFEST.json", (T0 + at, T0 + at))
    evals = sorted((run / "checkpoints").glob("iter_*"))
    for k, at in enumerate(results):
        p = evals[k % len(evals)] / "eval" / ("test" if k < len(evals) else "validation") / "results.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{}")
        os.utime(p, (T0 + at, T0 + at))
    return run


def _fake_demo(tmp_path: Path) -> Path:
    out = tmp_path / "demo"
    a = _fake_run(out / "runs", "vineppo-seed0", [10, 20, 30, 40], {2: 100, 4: 200}, [210, 220, 236])
    b = _fake_run(out / "runs", "vineppo-seed1", [5, 5, 5, 5], {2: 50, 4: 90}, [100])
    c = _fake_run(out / "control" / "runs", "vineppo-seed0", [1, 1, 1, 1], {2: 10, 4: 20}, [22])
    details = {"sft": {"seconds": 120.0}, "sft_cached": False, "summary": {"seconds": 600.0},
               "eval": {"n_samples": 8},
               "runs": {"vineppo-seed0": {"run_dir": str(a), "process_seconds": 150.0, "seed_index": 0},
                        "vineppo-seed1": {"run_dir": str(b), "process_seconds": 40.0, "seed_index": 1}},
               "control": {"runs": {"vineppo-seed0": {"run_dir": str(c), "process_seconds": 10.0, "seed_index": 0}}}}
    (out / "demo_details.json").write_text(json.dumps(details))
    return out


def test_read_demo_splits_each_run_into_iterations_evaluation_and_the_rest(tmp_path):
    details, runs = read_demo(_fake_demo(tmp_path))
    assert [(r.group, r.name, r.seed_index) for r in runs] == [
        ("main", "vineppo-seed0", 0), ("main", "vineppo-seed1", 1), ("control", "vineppo-seed0", 0)]
    a, b, c = runs
    assert a.iterations == {1: 10.0, 2: 20.0, 3: 30.0, 4: 40.0} and a.checkpoints == [2, 4]
    # evaluation: the newest results.json (236) minus the last checkpoint's save (200)
    assert a.evaluation == pytest.approx(36.0) and b.evaluation == pytest.approx(10.0)
    assert c.evaluation == pytest.approx(2.0)
    assert a.rest == pytest.approx(150 - 100 - 36) and b.rest == pytest.approx(40 - 20 - 10)
    # stopped after 2 iterations: the rest, iterations 1-2, one of two checkpoints' evaluation, at half the samples
    assert a.projected(2, 0.5) == pytest.approx(14 + 30 + 36 / 2 * 0.5)
    assert a.projected(4) == pytest.approx(a.process)
    with pytest.raises(ValueError, match="only 4 were measured"):
        a.projected(5)


def test_floor_is_the_longest_run_or_the_lanes_share_after_the_sft_start():
    assert floor_seconds(60, [100, 50, 30], 2) == pytest.approx(60 + 100)  # the longest run decides
    assert floor_seconds(60, [60, 50, 40], 2) == pytest.approx(60 + 75)  # the share decides
    assert floor_seconds(0, [60, 50, 40], 1) == pytest.approx(150)
    assert floor_seconds(10, [], 2) == pytest.approx(10)
    with pytest.raises(ValueError):
        floor_seconds(0, [1.0], 0)


def test_main_prints_the_floors(tmp_path, capsys):
    out = _fake_demo(tmp_path)
    assert main([str(out), "--variant", "2:4"]) == 0
    text = capsys.readouterr().out
    last = text.strip().splitlines()[-1]
    # as run: 120 + max(150, 200 / 2); one seed: runs of seed index 0 (150 and 10); 2:4 as below
    two = [150 - 100 - 36 + 30 + 36 / 2 / 2, 40 - 20 - 10 + 10 + 10 / 2 / 2, 10 - 4 - 2 + 2 + 2 / 2 / 2]
    want = (f"demo_time: measured 10.0 min, floor {(120 + 150) / 60:.1f} min, one seed floor {(120 + 150) / 60:.1f} min, "
            f"2:4 floor {(120 + max(max(two), sum(two) / 2)) / 60:.1f} min")
    assert last == want
    assert "main" in text and "control" in text
    with pytest.raises(SystemExit):
        main([str(out), "--variant", "ten"])
    # the default variants (10 and 5 iterations) after runs of 4 iterations: not projected, no traceback
    assert main([str(out)]) == 0
    text = capsys.readouterr().out
    assert "10 iterations, 8 evaluation samples: not projected (the runs measured 4)" in text
    assert text.strip().splitlines()[-1] == (f"demo_time: measured 10.0 min, floor {(120 + 150) / 60:.1f} min, "
                                             f"one seed floor {(120 + 150) / 60:.1f} min")


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="demo_details.json"):
        read_demo(tmp_path)
    out = _fake_demo(tmp_path)
    (out / "runs" / "vineppo-seed1" / "metrics.jsonl").write_text('{"iteration": 1, "seconds": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not JSON"):
        read_demo(out)
    (out / "runs" / "vineppo-seed1" / "metrics.jsonl").write_text('{"iteration": 1, "seconds": 1}\n')
    for p in (out / "runs" / "vineppo-seed1" / "checkpoints").glob("*/eval/*/results.json"):
        p.unlink()
    with pytest.raises(ValueError, match="no evaluated checkpoint"):
        read_demo(out)


def test_runtime_without_checkpoints_projects_no_evaluation():
    r = RunTime("main", "x", 0, 10.0, {1: 4.0, 2: 4.0}, [], 0.0)
    assert r.projected(1) == pytest.approx(2.0 + 4.0)
