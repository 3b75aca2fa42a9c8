"""`vineppo compare` on hand-built runs: best-on-validation selection, iterations / wall-clock to
the PPO peak, the markdown table and the four PNGs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from vineppo.compare import (NO_VALIDATION, PLOT_FILES, TABLE_FILE, best_on_validation, compare, load_run,
                             read_metrics)
from vineppo.evaluate import write_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(root: Path, name: str, algorithm: str, seconds_per_iter: float, test: dict[int, float],
             validation: dict[int, float], iterations: int = 40, task: str = "gsm8k") -> Path:
    """A run directory as `train` + `eval` leave it: config.yaml, metrics.jsonl, eval results."""
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(f"algorithm: {algorithm}\ndata:\n  task: {task}\n")
    with open(run / "metrics.jsonl", "w") as f:
        for it in range(1, iterations + 1):
            f.write(json.dumps({"iteration": it, "seconds": seconds_per_iter, "reward/mean": 0.2 + 0.01 * it,
                                "train/kl": 1e-3 * it}) + "\n")
    for split, curve in (("test", test), ("validation", validation)):
        for it, p in curve.items():
            d = run / "checkpoints" / f"iter_{it:06d}" / "eval" / split
            write_results(d, {"pass@1": p, "iteration": it, "split": split, "task": task,
                              "max_problems": None}, [])
    return run


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    ppo = make_run(tmp_path, "ppo", "ppo", 10.0,
                   test={10: 0.20, 20: 0.30, 30: 0.35, 40: 0.33},
                   validation={10: 0.22, 20: 0.31, 30: 0.30, 40: 0.36})
    vine = make_run(tmp_path, "vineppo", "vineppo", 30.0,
                    test={10: 0.30, 20: 0.36, 30: 0.40, 40: 0.41},
                    validation={10: 0.30, 20: 0.38, 30: 0.38, 40: 0.37})
    return {"ppo": ppo, "vineppo": vine}


def test_best_on_validation(runs):
    # PPO: best validation at 40 although the test peak is at 30 — selection never looks at test.
    assert best_on_validation(load_run(runs["ppo"])) == 40
    # VinePPO: validation tie between 20 and 30 -> the earlier checkpoint.
    assert best_on_validation(load_run(runs["vineppo"])) == 20


def test_no_validation_is_loud_and_selects_nothing(tmp_path, caplog):
    run = make_run(tmp_path, "testonly", "vineppo", 1.0, test={10: 0.5, 20: 0.9}, validation={})
    with caplog.at_level(logging.WARNING):
        assert best_on_validation(load_run(run)) is None
    assert NO_VALIDATION in caplog.text


def test_compare_writes_table_and_plots(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    result = compare([runs["ppo"], runs["vineppo"]], out)
    by = {s.label: s for s in result.summaries}
    ppo, vine = by["ppo"], by["vineppo"]
    assert ppo.selected_iteration == 40 and ppo.selected_test == 0.33
    assert vine.selected_iteration == 20 and vine.selected_test == 0.36
    # PPO's peak: 0.35 at iteration 30 (300 s). VinePPO first reaches it at 20 (600 s).
    assert ppo.ppo_peak == vine.ppo_peak == 0.35
    assert ppo.iterations_to_ppo_peak == 30 and vine.iterations_to_ppo_peak == 20
    assert vine.hours_to_ppo_peak == pytest.approx(600 / 3600)
    assert vine.iteration_speedup == pytest.approx(1.5) and vine.wallclock_speedup == pytest.approx(0.5)
    assert ppo.iterations == 40 and ppo.wallclock_hours == pytest.approx(400 / 3600)

    md = (out / TABLE_FILE).read_text()
    assert "| vineppo | vineppo | gsm8k | 40 |" in md and "1.50×" in md
    printed = capsys.readouterr().out
    assert "selected (best val) iter" in printed and "vineppo" in printed
    assert json.loads((out / "compare.json").read_text())[1]["iterations_to_ppo_peak"] == 20
    for name in PLOT_FILES.values():
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name


def test_compare_cli_and_missing_validation(runs, tmp_path, capsys):
    from vineppo.cli import main

    nov = make_run(tmp_path, "noval", "vineppo", 5.0, test={10: 0.5}, validation={})
    out = tmp_path / "cli"
    assert main(["compare", str(runs["ppo"]), str(runs["vineppo"]), str(nov), "--output-dir", str(out)]) == 0
    md = (out / TABLE_FILE).read_text()
    row = next(line for line in md.splitlines() if line.startswith("| noval "))
    assert NO_VALIDATION in row
    assert main(["compare", str(tmp_path / "nope"), "--output-dir", str(out)]) == 2


def test_read_metrics_tolerates_a_half_written_last_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"iteration": 1, "seconds": 2}\n{"iteration": 2, "seconds": 3}\n{"iteration": 2, "sec')
    assert [r["iteration"] for r in read_metrics(p)] == [1, 2]
    p.write_text('{"iteration": 1}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(p)
