"""`vineppo compare`'s selection, reach and grid on hand-built runs with hand-computed answers
(vineppo/compare/select.py, vineppo/compare/runs.py): ties, the tolerance of "reached", speed-ups,
metrics rows that repeat or are missing, and the grid each run is cut to."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from vineppo.compare.runs import CompareError, Run, apply_grid, load_run, read_metrics
from vineppo.compare.select import (best_on_validation, first_reaching, peak_test, reach_table, reference_runs,
                                    summarize_run)
from vineppo.evaluate import write_results


def _run(label="r", algorithm="vineppo", task="gsm8k", test=None, validation=None, seconds=None, tokens=None,
         **kw) -> Run:
    """A Run with metrics rows 1..n (`seconds[i]`, `compute/generated_tokens` cumulative)."""
    seconds = seconds or []
    metrics = [{"iteration": i + 1, "seconds": s} for i, s in enumerate(seconds)]
    for row, t in zip(metrics, tokens or []):
        row["compute/generated_tokens"] = t
    evals = {"test": {it: {"pass@1": p} for it, p in (test or {}).items()},
             "validation": {it: {"pass@1": p} for it, p in (validation or {}).items()}}
    return Run(Path(label), label, algorithm, task, metrics, evals, **kw)


# ---- selection --------------------------------------------------------------------------------
def test_best_on_validation_earliest_of_ties_and_never_test():
    r = _run(validation={30: 0.5, 10: 0.5, 20: 0.4}, test={20: 0.9})
    assert best_on_validation(r) == 10


def test_peak_test_earliest_of_ties():
    assert peak_test(_run(test={30: 0.7, 10: 0.2, 20: 0.7})) == (20, 0.7)
    assert peak_test(_run(test={})) is None


def test_first_reaching_in_iteration_order_with_a_rounding_tolerance():
    r = _run(test={30: 0.5, 10: 0.1, 20: 0.3 + 1e-13})
    assert first_reaching(r, 0.3) == 20  # 1e-13 above counts, of course
    r = _run(test={30: 0.5, 10: 0.1, 20: 0.3 - 1e-13})
    assert first_reaching(r, 0.3) == 20  # 1e-13 below is the same number printed
    r = _run(test={30: 0.5, 10: 0.1, 20: 0.3 - 1e-9})
    assert first_reaching(r, 0.3) == 30
    assert first_reaching(_run(test={1: 0.5 - 1e-12}), 0.5) == 1  # the tolerance's edge counts
    assert first_reaching(r, 0.6) is None


def test_reference_run_is_the_first_ppo_run_of_each_task():
    a, b = _run("a", "ppo", "gsm8k"), _run("b", "ppo", "gsm8k")
    c, d = _run("c", "vineppo", "math"), _run("d", "ppo", "math")
    assert reference_runs([c, a, b, d]) == {"gsm8k": a, "math": d}
    assert reference_runs([c]) == {}


def test_reach_table_hand_computed():
    # target "t" peaks at 0.6 (iteration 20); "r" first reaches 0.6 at iteration 2 (after 10 + 20 s)
    t = _run("t", test={10: 0.4, 20: 0.6}, seconds=[1.0] * 20)
    r = _run("r", test={1: 0.5, 2: 0.6, 3: 0.7}, seconds=[10.0, 20.0, 30.0], tokens=[100, 300, 600])
    other_task = _run("m", task="math", test={1: 0.9}, seconds=[1.0])
    rows = {(x.run, x.target): x for x in reach_table([t, r, other_task])}
    assert set(rows) == {("r", "t"), ("t", "r")}  # same task only, never a run against itself
    x = rows[("r", "t")]
    assert (x.target_peak, x.iteration, x.hours, x.generated_tokens) == (0.6, 2, 30.0 / 3600, 300)
    y = rows[("t", "r")]  # r's peak 0.7 is never reached by t
    assert (y.target_peak, y.iteration, y.hours, y.generated_tokens) == (0.7, None, None, None)
    # a run without test results is no target, but is measured against the others
    assert [(x.run, x.target, x.iteration) for x in reach_table([_run("e"), r])] == [("e", "r", None)]


def test_summary_speedups_hand_computed():
    # PPO peaks at 0.5 at iteration 4, after 4 × 100 s; VinePPO reaches 0.5 at iteration 2 after 2 × 50 s
    ppo = _run("ppo", "ppo", test={2: 0.3, 4: 0.5}, validation={2: 0.3, 4: 0.4}, seconds=[100.0] * 4)
    vine = _run("vine", test={1: 0.2, 2: 0.5, 3: 0.6}, validation={1: 0.1, 2: 0.7, 3: 0.7},
                seconds=[50.0] * 3, tokens=[10, 20, 35])
    s = summarize_run(vine, ppo)
    assert (s.label, s.algorithm, s.task, s.iterations) == ("vine", "vineppo", "gsm8k", 3)
    assert s.wallclock_hours == pytest.approx(150 / 3600)
    assert (s.selected_iteration, s.selected_validation, s.selected_test) == (2, 0.7, 0.5)
    assert (s.last_iteration, s.last_test, s.peak_test, s.ppo_peak) == (3, 0.6, 0.6, 0.5)
    assert s.iterations_to_ppo_peak == 2 and s.hours_to_ppo_peak == pytest.approx(100 / 3600)
    assert s.iteration_speedup == 4 / 2
    assert s.wallclock_speedup == pytest.approx(400 / 100)
    assert s.generated_tokens == 35
    # PPO against itself: reaches its own peak at its peak
    own = summarize_run(ppo, ppo)
    assert own.iteration_speedup == 1.0 and own.wallclock_speedup == pytest.approx(1.0)
    assert own.generated_tokens is None  # no token counts logged


def test_summary_without_reference_validation_or_metrics():
    r = _run("r", test={10: 0.3}, validation={20: 0.4})
    s = summarize_run(r, None)
    assert s.wallclock_hours is None and s.iterations == 0
    assert s.selected_iteration == 20 and s.selected_validation == 0.4
    assert s.selected_test is None  # no test result at the selected checkpoint
    assert s.ppo_peak is None and s.iterations_to_ppo_peak is None and s.hours_to_ppo_peak is None
    assert s.iteration_speedup is None and s.wallclock_speedup is None
    s = summarize_run(_run("n", test={5: 0.1}), None)
    assert s.selected_iteration is None and s.selected_validation is None and s.selected_test is None
    # a reference reached at iteration 0 (the initial model) has no speed-up
    ppo = _run("ppo", "ppo", test={0: 0.2, 4: 0.1}, seconds=[1.0] * 4)
    s = summarize_run(_run("z", test={0: 0.2}, seconds=[1.0]), ppo)
    assert s.iterations_to_ppo_peak == 0 and s.iteration_speedup is None and s.wallclock_speedup is None


def test_summary_of_a_run_evaluated_on_validation_only():
    r = Run(Path("v"), "v", "vineppo", "gsm8k", [], {"validation": {3: {"pass@1": 0.4}}})
    s = summarize_run(r, None)
    assert (s.selected_iteration, s.selected_validation, s.selected_test) == (3, 0.4, None)
    assert (s.last_iteration, s.last_test, s.peak_test) == (None, None, None)


def test_a_reference_reached_at_the_first_iteration_has_a_speedup():
    ppo = _run("ppo", "ppo", test={4: 0.5}, seconds=[100.0] * 4)
    s = summarize_run(_run("one", test={1: 0.5}, seconds=[30.0]), ppo)
    assert s.iterations_to_ppo_peak == 1 and s.iteration_speedup == 4.0
    assert s.wallclock_speedup == pytest.approx(400 / 30)


# ---- runs: metrics, cumulative counters ------------------------------------------------------------
def test_cumulative_seconds_and_tokens():
    r = Run(Path("r"), "r", "ppo", None, [{"iteration": 1, "seconds": 2.0}, {"iteration": 2},
                                           {"iteration": 3, "seconds": 0.5}])
    assert r.cumulative_seconds() == {0: 0.0, 1: 2.0, 2: 2.0, 3: 2.5}
    assert r.iterations == 3
    r.metrics = [{"iteration": 1, "generate/tokens": 5}, {"iteration": 2, "mc/tokens": 7},
                 {"iteration": 3, "compute/generated_tokens": 100, "generate/tokens": 1}]
    assert r.cumulative_generated_tokens() == {0: 0.0, 1: 5.0, 2: 12.0, 3: 100.0}
    r.metrics = [{"iteration": 1, "generate/tokens": 5}, {"iteration": 2}]
    assert r.cumulative_generated_tokens() == {}
    assert Run(Path("e"), "e", "ppo", None, []).iterations == 0


def test_read_metrics_last_duplicate_wins_and_missing_rows_warn(tmp_path, caplog):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"iteration": 1, "a": 1}\n\n{"iteration": 3, "a": 3}\n{"iteration": 1, "a": 9}\n')
    with caplog.at_level(logging.WARNING):
        rows = read_metrics(p)
    assert rows == [{"iteration": 1, "a": 9}, {"iteration": 3, "a": 3}]
    assert "iterations [2] have no metrics row" in caplog.text
    assert read_metrics(tmp_path / "absent.jsonl") == []


@pytest.mark.parametrize("line", ['[1, 2]', '{"iteration": "2"}', '{"seconds": 1}'])
def test_read_metrics_names_a_row_without_an_integer_iteration(tmp_path, line):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"iteration": 1}\n' + line + "\n")
    with pytest.raises(CompareError, match=rf"^{p}, line 2: expected an object with an integer 'iteration'$"):
        read_metrics(p)


def test_read_metrics_names_an_invalid_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"iteration": 1}\n{oops\n{"iteration": 2}\n')
    with pytest.raises(CompareError, match=rf"^{p}, line 2: invalid JSON \("):
        read_metrics(p)


def test_read_metrics_of_an_empty_file_and_a_missing_first_row(tmp_path, caplog):
    p = tmp_path / "metrics.jsonl"
    p.write_text("\n")
    assert read_metrics(p) == []
    p.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in (2, 3, 5)))
    with caplog.at_level(logging.WARNING):
        assert [r["iteration"] for r in read_metrics(p)] == [2, 3, 5]
    assert "iterations [1, 4] have no metrics row" in caplog.text


# ---- runs: loading a directory, the grid -------------------------------------------------------
def _write_run(root: Path, name: str, checkpoints: dict[int, float], config: str = "algorithm: ppo\n",
               initial: float | None = None, iterations: int = 0) -> Path:
    run = root / name
    run.mkdir()
    if config:
        (run / "config.yaml").write_text(config)
    if iterations:
        (run / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i, "seconds": 1.0}) + "\n"
                                                   for i in range(1, iterations + 1)))
    dirs = {it: run / "checkpoints" / f"iter_{it:06d}" for it in checkpoints}
    if initial is not None:
        dirs[0] = run / "initial"
        checkpoints = {0: initial, **checkpoints}
    for it, p in checkpoints.items():
        write_results(dirs[it] / "eval" / "test", {"pass@1": p, "max_problems": None}, [])
    return run


def test_load_run_reads_everything_a_comparison_needs(tmp_path):
    run = _write_run(tmp_path, "a", {10: 0.2, 20: 0.3, 25: 0.35},
                     config="algorithm: grpo\ndata:\n  task: math\neval_every: 20\n", initial=0.1, iterations=25)
    r = load_run(run)
    assert (r.label, r.algorithm, r.task, r.path) == ("a", "grpo", "math", run)
    assert r.save_every == 10 and r.eval_every == 20 and r.last_checkpoint == 25
    assert r.curve("test") == [(0, 0.1), (10, 0.2), (20, 0.3), (25, 0.35)]
    assert r.evals["validation"] == {} and r.iterations == 25
    assert load_run(run, label="mine").label == "mine"


def test_load_run_without_config_metrics_or_checkpoints(tmp_path, caplog):
    run = tmp_path / "bare"
    run.mkdir()
    with caplog.at_level(logging.WARNING):
        r = load_run(run)
    assert (r.algorithm, r.task, r.metrics, r.save_every, r.eval_every, r.last_checkpoint) == \
        ("unknown", None, [], None, None, None)
    assert "has no config.yaml" in caplog.text and "has no metrics.jsonl rows" in caplog.text
    assert "has no eval results" in caplog.text
    with pytest.raises(CompareError, match=r"does not exist$"):
        load_run(tmp_path / "absent")


def test_apply_grid_keeps_multiples_and_each_runs_last(tmp_path):
    a = load_run(_write_run(tmp_path, "a", {10: 0.1, 20: 0.2, 30: 0.3, 40: 0.4, 45: 0.45}, initial=0.0))
    b = load_run(_write_run(tmp_path, "b", {20: 0.2, 40: 0.4, 60: 0.6}, config="algorithm: ppo\nsave_every: 20\n"))
    # default: the coarsest save interval, 20 (b); a keeps 0, 20, 40 and its last, 45
    assert apply_grid([a, b], None) == 20
    assert sorted(a.evals["test"]) == [0, 20, 40, 45] and sorted(b.evals["test"]) == [20, 40, 60]
    # an explicit grid of 40
    a = load_run(tmp_path / "a")
    assert apply_grid([a], 40) == 40 and sorted(a.evals["test"]) == [0, 40, 45]
    # a declared eval_every wins over the save interval
    c = load_run(_write_run(tmp_path, "c", {10: 0.1, 20: 0.2, 30: 0.3}, config="algorithm: ppo\neval_every: 30\n"))
    assert apply_grid([c], None) == 30 and sorted(c.evals["test"]) == [30]


def test_apply_grid_refuses_a_grid_a_run_cannot_fill(tmp_path):
    b = load_run(_write_run(tmp_path, "b", {20: 0.2, 40: 0.4}, config="algorithm: ppo\nsave_every: 20\n"))
    with pytest.raises(CompareError, match=r"^b \(ppo\) saved a checkpoint every 20 iterations, so it has none on "
                                           r"a grid of 30: use --iteration-grid 20 or a multiple of it$"):
        apply_grid([b], 30)


def test_load_run_skips_a_checkpoint_of_unknown_iteration_and_reads_the_rest(tmp_path, caplog):
    run = _write_run(tmp_path, "u", {2: 0.4}, config="algorithm: ppo\n")
    odd = run / "checkpoints" / "iter_000001_copy"  # sorts before iter_000002; no manifest, no number
    write_results(odd / "eval" / "test", {"pass@1": 0.9, "max_problems": None}, [])
    with caplog.at_level(logging.WARNING):
        r = load_run(run)
    assert r.curve("test") == [(2, 0.4)] and r.last_checkpoint == 2
    assert f"skipping {odd}: cannot tell its iteration" in caplog.text


def test_load_run_checkpoints_from_iteration_1_and_none_but_the_initial_model(tmp_path):
    r = load_run(_write_run(tmp_path, "every", {1: 0.1, 2: 0.2, 3: 0.3}, config="algorithm: ppo\n"))
    assert r.save_every == 1 and r.last_checkpoint == 3
    r = load_run(_write_run(tmp_path, "start", {}, config="algorithm: ppo\n", initial=0.1))
    assert r.curve("test") == [(0, 0.1)] and r.last_checkpoint is None and r.save_every is None


def test_load_run_warns_of_results_on_part_of_a_split(tmp_path, caplog):
    run = _write_run(tmp_path, "p", {4: 0.3}, config="algorithm: ppo\n")
    part = run / "checkpoints" / "iter_000002"
    write_results(part / "eval" / "test", {"pass@1": 0.2, "max_problems": 50}, [])
    with caplog.at_level(logging.WARNING):
        r = load_run(run)
    assert r.curve("test") == [(2, 0.2), (4, 0.3)]
    assert f"{run}: test results of iterations [2] cover only part of the split (max_problems)" in caplog.text
