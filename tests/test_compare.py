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
def figures(monkeypatch) -> dict:
    """The matplotlib figures `compare` saves, by file name (still written to disk): tests read the
    plotted data instead of trusting a PNG's size."""
    from matplotlib.figure import Figure

    saved: dict = {}
    real = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        saved[Path(fname).name] = self
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def plotted(fig) -> dict[str, tuple[list[float], list[float]]]:
    """label → (x, y) of every line of the figure's axes (unlabelled lines as `_childN`)."""
    return {line.get_label(): ([float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()])
            for line in fig.axes[0].get_lines()}


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


def test_compare_writes_table_and_plots(runs, tmp_path, capsys, figures):
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
        assert (out / name).read_bytes().startswith(PNG_MAGIC), name
    assert set(figures) >= set(PLOT_FILES.values())
    lines = plotted(figures[PLOT_FILES["test_vs_iteration"]])
    assert lines["ppo (ppo) test"] == ([10, 20, 30, 40], pytest.approx([20, 30, 35, 33]))
    assert lines["vineppo (vineppo) validation"] == ([10, 20, 30, 40], pytest.approx([30, 38, 38, 37]))
    assert lines["PPO peak (gsm8k)"][1] == pytest.approx([35, 35])
    circles = sorted(xy for label, xy in lines.items() if label.startswith("_") and len(xy[0]) == 1)
    assert circles == [([20.0], [pytest.approx(36.0)]), ([40.0], [pytest.approx(33.0)])]  # the selected checkpoints
    # wall-clock: PPO 10 s and VinePPO 30 s per iteration
    lines = plotted(figures[PLOT_FILES["test_vs_wallclock"]])
    assert lines["ppo (ppo) test"][0] == pytest.approx([100 / 3600, 200 / 3600, 300 / 3600, 400 / 3600])
    assert lines["vineppo (vineppo) test"][0] == pytest.approx([300 / 3600, 600 / 3600, 900 / 3600, 1200 / 3600])
    # train reward: the raw series and its moving average
    lines = plotted(figures[PLOT_FILES["reward_vs_iteration"]])
    raw = [0.2 + 0.01 * it for it in range(1, 41)]
    assert any(y == pytest.approx(raw) for label, (_, y) in lines.items() if label.startswith("_"))
    assert lines["ppo (ppo)"][1][-1] == pytest.approx(sum(raw[-10:]) / 10)
    # accuracy vs KL: KL is the mean of train/kl = 1e-3·it over the 5 iterations up to the checkpoint
    x, y = plotted(figures[PLOT_FILES["accuracy_vs_kl"]])["vineppo (vineppo)"]
    assert x == pytest.approx([1e-3 * (it - 2) for it in (10, 20, 30, 40)]) and y == pytest.approx([30, 36, 40, 41])


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


def _add_token_counts(run: Path, generated_per_iter: float, mc_per_iter: float = 0.0) -> None:
    """Rewrite metrics.jsonl as `train` logs compute now: per-iteration and cumulative tokens."""
    rows = read_metrics(run / "metrics.jsonl")
    total = 0.0
    with open(run / "metrics.jsonl", "w") as f:
        for r in rows:
            total += generated_per_iter + mc_per_iter
            r.update({"generate/tokens": generated_per_iter, "compute/generated_tokens": total})
            if mc_per_iter:
                r["mc/tokens"] = mc_per_iter
            f.write(json.dumps(r) + "\n")


def test_compare_three_algorithms_reach_each_others_peak_in_tokens_and_time(runs, tmp_path, capsys, figures):
    """VinePPO, PPO and GRPO: every run's tokens and wall-clock to reach every other run's peak,
    and the generated-tokens plot."""
    grpo = make_run(tmp_path, "grpo", "grpo", 5.0, test={10: 0.25, 20: 0.34, 30: 0.36, 40: 0.37},
                    validation={10: 0.2, 20: 0.3, 30: 0.35, 40: 0.34})
    _add_token_counts(runs["ppo"], 1000.0)
    _add_token_counts(runs["vineppo"], 1000.0, mc_per_iter=8000.0)
    _add_token_counts(grpo, 1000.0)
    out = tmp_path / "cmp3"
    result = compare([runs["vineppo"], runs["ppo"], grpo], out)
    by = {s.label: s for s in result.summaries}
    assert by["grpo"].selected_iteration == 30 and by["grpo"].selected_test == 0.36
    assert by["vineppo"].generated_tokens == 40 * 9000 and by["grpo"].generated_tokens == 40 * 1000
    records = {r["label"]: r for r in json.loads((out / "compare.json").read_text())}
    reach = {(r["run"], r["target"]): r for rec in records.values() for r in rec["reach"]}
    assert len(reach) == 6
    # GRPO's peak 0.37 (iteration 40): VinePPO first reaches it at 30 -> 900 s, 270k tokens
    r = reach[("vineppo", "grpo")]
    assert r["target_peak"] == 0.37 and r["iteration"] == 30
    assert r["hours"] == pytest.approx(900 / 3600) and r["generated_tokens"] == 30 * 9000
    # PPO's peak 0.35 (iteration 30): GRPO reaches it at 30 -> 150 s, 30k tokens
    r = reach[("grpo", "ppo")]
    assert r["iteration"] == 30 and r["hours"] == pytest.approx(150 / 3600) and r["generated_tokens"] == 30_000
    # VinePPO's peak 0.41 is reached by neither baseline
    assert reach[("ppo", "vineppo")]["iteration"] is None and reach[("grpo", "vineppo")]["iteration"] is None
    md = (out / TABLE_FILE).read_text()
    assert "Reaching each other run's peak" in md
    assert "| vineppo | grpo | 37.0 | 30 | 0.25 | 0.270 |" in md
    assert "| ppo | vineppo | 41.0 | not reached |" in md
    assert (out / PLOT_FILES["test_vs_generated_tokens"]).read_bytes().startswith(PNG_MAGIC)
    lines = plotted(figures[PLOT_FILES["test_vs_generated_tokens"]])
    # millions of generated tokens at each checkpoint: VinePPO 9000 per iteration, GRPO 1000
    assert lines["vineppo (vineppo) test"][0] == pytest.approx([it * 9000 / 1e6 for it in (10, 20, 30, 40)])
    assert lines["grpo (grpo) test"] == (pytest.approx([it * 1000 / 1e6 for it in (10, 20, 30, 40)]),
                                         pytest.approx([25, 34, 36, 37]))
    assert "reaching each other run's peak" in capsys.readouterr().out


def test_generated_tokens_of_runs_logged_before_compute_counters(runs):
    """Older metrics.jsonl (no compute/ counters): generate/tokens + mc/tokens are summed."""
    rows = read_metrics(runs["vineppo"] / "metrics.jsonl")
    with open(runs["vineppo"] / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({**r, "generate/tokens": 10, "mc/tokens": 5}) + "\n")
    assert load_run(runs["vineppo"]).cumulative_generated_tokens()[40] == 40 * 15
    assert load_run(runs["ppo"]).cumulative_generated_tokens() == {}
