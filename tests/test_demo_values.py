"""The demo's value panel (vineppo/demo/values.py): summary.json `probe` from hand-written run
directories (metrics.jsonl and probe records), pooled over seeds and probed iterations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vineppo.demo.values import plot_values, probe_line, probe_summary


def _run(tmp: Path, name: str, algorithm: str, metrics: list[dict], states: list[dict] = ()) -> tuple[str, dict]:
    d = tmp / name
    (d / "probe").mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (d / "probe" / "states.rank0.jsonl").write_text("".join(json.dumps(s) + "\n" for s in states))
    return name, {"algorithm": algorithm, "run_dir": str(d)}


def _state(it, step, truth, **est):
    return {"iteration": it, "question_index": step, "sample_index": len(est), "step": step, "rank": 0,
            "truth": truth, "mc": None, "critic": None, **est}


def _probe(est, it, *, oracle=None, rollouts=None, local=None, mae=0.0):
    m = {"iteration": it, f"probe/{est}_abs_error": mae}
    for key, counts in (("oracle_ranking", oracle), ("ranking", rollouts)):
        if counts is not None:
            m[f"probe/{est}_{key}_correct"], m[f"probe/{est}_{key}_pairs"] = counts
            m[f"probe/{est}_{key}_accuracy"] = counts[0] / counts[1] if counts[1] else float("nan")
    if local is not None:
        m[f"probe/{est}_localised"], m[f"probe/{est}_localisation_responses"] = local
    return m


def test_probe_summary_pools_counts_by_hand(tmp_path):
    runs = dict([
        _run(tmp_path, "vineppo-seed0", "vineppo", [
            {"iteration": 1, "reward/mean": 0.3},  # not probed
            _probe("mc", 5, oracle=(3, 3), rollouts=(1, 4), local=(4, 5)),
            _probe("mc", 10, oracle=(0, 0), rollouts=(2, 2), local=(0, 0)),
        ], [_state(5, 0, 0.5, mc=0.4), _state(5, 1, 0.5, mc=0.8)]),
        _run(tmp_path, "vineppo-seed1", "vineppo", [_probe("mc", 5, oracle=(1, 2), rollouts=(0, 2), local=(2, 5))],
             [_state(5, 0, 0.2, mc=0.4)]),
        _run(tmp_path, "ppo-seed0", "ppo", [
            # PPO runs also log the MC estimator at their states: not VinePPO's, left out of mc_*
            {**_probe("critic", 5, oracle=(1, 4), rollouts=(1, 8), local=(1, 10)),
             **_probe("mc", 5, oracle=(0, 9), local=(0, 9))},
        ], [_state(5, 2, 0.5, critic=1.5, mc=0.5)]),
        _run(tmp_path, "grpo-seed0", "grpo", [_probe("mc", 5, oracle=(0, 7))]),
    ])
    p = probe_summary(runs)
    assert p["ranking_against"] == "oracle" and p["iterations"] == [5, 10]
    # pooled: (3 + 0 + 1) / (3 + 0 + 2) pairs, not the mean of the per-probe ratios (1, NaN, 0.5)
    assert (p["mc_ranking_accuracy"], p["mc_ranking_pairs"]) == (0.8, 5)
    assert p["mc_ranking_accuracy_rollouts"] == pytest.approx(3 / 8)
    assert (p["mc_localisation"], p["mc_localisation_responses"]) == (0.6, 10)
    assert (p["critic_ranking_accuracy"], p["critic_ranking_pairs"]) == (0.25, 4)
    assert (p["critic_localisation"], p["critic_localisation_responses"]) == (0.1, 10)
    # errors over the state records: MC |0.4-0.5|, |0.8-0.5|, |0.4-0.2| -> 0.2 over 3 states; critic 1.0
    assert (p["mc_abs_error"], p["mc_states"]) == (pytest.approx(0.2), 3)
    assert (p["critic_abs_error"], p["critic_states"]) == (1.0, 1)
    assert p["mc_error_by_step"] == {0: pytest.approx(0.15), 1: pytest.approx(0.3)}
    assert p["critic_error_by_step"] == {2: pytest.approx(1.0)}
    line = probe_line(p)
    assert "MC 80% of 5 pairs" in line and "critic 25% of 4" in line and "MC 60% of 10 failed" in line
    assert plot_values(tmp_path / "values.png", runs).is_file()


def test_without_oracle_the_rollouts_order_is_used_and_missing_methods_are_none(tmp_path):
    runs = dict([_run(tmp_path, "vineppo", "vineppo", [_probe("mc", 2, rollouts=(3, 4), mae=0.25)],
                      [_state(2, 0, 0.5, mc=0.75)])])
    p = probe_summary(runs)
    assert p["ranking_against"] == "rollouts" and p["mc_ranking_accuracy"] == 0.75 and p["mc_ranking_pairs"] == 4
    assert p["critic_ranking_accuracy"] is None and p["critic_abs_error"] is None and p["critic_error_by_step"] == {}
    assert p["mc_localisation"] is None and p["mc_localisation_responses"] == 0
    assert p["mc_abs_error"] == 0.25
    assert probe_summary(dict([_run(tmp_path, "grpo", "grpo", [{"iteration": 1}])])) is None
    assert plot_values(tmp_path / "none.png", dict([_run(tmp_path, "g2", "grpo", [{"iteration": 1}])])) is None


def test_counts_are_rounded_to_four_places_and_half_counted_rows_are_left_out(tmp_path):
    runs = dict([
        _run(tmp_path, "grpo", "grpo", [_probe("mc", 3, oracle=(5, 5))]),  # not VinePPO's: first, and skipped
        _run(tmp_path, "vineppo", "vineppo", [
            _probe("mc", 3, oracle=(1, 3), local=(2, 3)),
            {"iteration": 4, "probe/mc_oracle_ranking_pairs": 9},  # pairs without a correct count: left out
            # a probe with a ranking score but no error: its iteration is probed all the same
            {"iteration": 7, "probe/mc_oracle_ranking_accuracy": 1.0, "probe/mc_oracle_ranking_correct": 0,
             "probe/mc_oracle_ranking_pairs": 0}],
            [_state(3, 0, 0.0, mc=1 / 3), _state(3, 1, 0.0, mc=2 / 3)])])
    p = probe_summary(runs)
    assert p["iterations"] == [3, 7]
    assert (p["mc_ranking_accuracy"], p["mc_ranking_pairs"]) == (0.3333, 3)
    assert (p["mc_localisation"], p["mc_localisation_responses"]) == (0.6667, 3)
    assert p["mc_abs_error"] == 0.5 and p["mc_error_by_step"] == {0: 0.3333, 1: 0.6667}
    one = dict([_run(tmp_path, "v1", "vineppo", [_probe("mc", 3, oracle=(1, 1))], [_state(3, 0, 0.0, mc=1 / 3)])])
    assert probe_summary(one)["mc_abs_error"] == 0.3333


def _with_dumps(tmp_path, name: str, algorithm: str, key: str, dumps: dict, metrics: list[dict]):
    """A run directory with the chain task's config, episode dumps and metrics (probed iterations)."""
    from test_probe_localisation import _dump_run

    run = _dump_run(tmp_path / name, algorithm, key, dumps)
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return name, {"algorithm": algorithm, "run_dir": str(run)}


def test_blamed_localisation_reads_the_dumps_of_the_probed_iterations(tmp_path):
    from test_probe_localisation import HIT, SLIP_AT_3

    from vineppo.demo.values import blamed_localisation

    before = [0.8, 0.2, 0.2, 0.2, 0.0]  # A = -.6, 0, 0, -.2, 0: blames step 0, before the slip at 3
    fail = lambda v: {"reward": 0.0, "response": SLIP_AT_3, "values": v}  # noqa: E731
    runs = dict([
        _with_dumps(tmp_path, "grpo", "grpo", "step_values", {"iter_000005.rank0.jsonl": [fail(HIT)]},
                    [{"iteration": 5}]),
        _with_dumps(tmp_path, "v0", "vineppo", "step_values", {
            "iter_000005.rank0.jsonl": [fail(HIT), fail(before), fail([0.0] * 5)],
            "iter_000006.rank0.jsonl": [fail(HIT), fail(HIT)]},                 # not probed: left out
            [_probe("mc", 5, local=(1, 3))]),
        _with_dumps(tmp_path, "v1", "vineppo", "step_values", {
            "iter_000005.rank0.jsonl": [fail(HIT), fail([0.0] * 5), fail([0.0] * 5)]},
            [_probe("mc", 5, local=(1, 3))]),
        _with_dumps(tmp_path, "p0", "ppo", "critic_step_values", {
            "iter_000005.rank0.jsonl": [fail(before), fail([0.0] * 5)]}, [_probe("critic", 5, local=(0, 2))])])
    # MC over both seeds at iteration 5: 2 hits, 1 before, 3 with nothing blamed: 2 of 3 blamed
    assert blamed_localisation(runs, "mc", [5]) == {"mc_unblamed": 3, "mc_localisation_blamed": 0.6667}
    assert blamed_localisation(runs, "mc", [5, 6]) == {"mc_unblamed": 3, "mc_localisation_blamed": 0.8}
    assert blamed_localisation(runs, "critic", [5]) == {"critic_unblamed": 1, "critic_localisation_blamed": 0.0}
    # everything unblamed: no share; no dumps at those iterations: nothing at all
    only_zero = dict([_with_dumps(tmp_path, "z", "vineppo", "step_values",
                                  {"iter_000005.rank0.jsonl": [fail([0.0] * 5)]}, [])])
    assert blamed_localisation(only_zero, "mc", [5]) == {"mc_unblamed": 1, "mc_localisation_blamed": None}
    assert blamed_localisation(runs, "mc", [9]) == {}
    p = probe_summary(runs)  # the summary reads the dumps of the probed iterations only
    assert (p["mc_unblamed"], p["mc_localisation_blamed"]) == (3, 0.6667)
    assert (p["critic_unblamed"], p["critic_localisation_blamed"]) == (1, 0.0)


def test_blamed_localisation_of_a_task_without_oracle_is_empty(tmp_path):
    from test_probe_localisation import HIT, SLIP_AT_3

    from vineppo.demo.values import blamed_localisation

    name, run = _with_dumps(tmp_path, "v", "vineppo", "step_values", {
        "iter_000005.rank0.jsonl": [{"reward": 0.0, "response": SLIP_AT_3, "values": HIT}]}, [])
    cfg = Path(run["run_dir"]) / "config.yaml"
    cfg.write_text(cfg.read_text().replace("task: chain", "task: arithmetic"))
    assert blamed_localisation({name: run}, "mc", [5]) == {}
    assert blamed_localisation({}, "mc", [5]) == {}


def test_probe_line_by_hand():
    p = {"iterations": [5, 10], "ranking_against": "oracle", "mc_ranking_accuracy": 0.9, "mc_ranking_pairs": 61,
         "critic_ranking_accuracy": 0.4918, "critic_ranking_pairs": 73, "mc_abs_error": 0.0431,
         "critic_abs_error": 0.8729, "mc_localisation": 0.47, "mc_localisation_responses": 1322,
         "mc_localisation_blamed": 0.86, "critic_localisation": 0.14, "critic_localisation_responses": 1200}
    assert probe_line(p) == (
        "value probe (iterations [5, 10]; ranking against the oracle): ranking accuracy MC 90% of 61 pairs / "
        "critic 49% of 73, mean |error| MC 0.043 / critic 0.873, localisation MC 47% of 1322 failed responses "
        "(86% of those blamed on a step) / critic 14% of 1200")
    p.update(mc_localisation_blamed=0.0, critic_abs_error=None, critic_localisation=None)
    line = probe_line(p)
    assert "(0% of those blamed on a step)" in line and "critic —, localisation" in line and "critic — of 1200" in line
    del p["mc_localisation_blamed"]
    assert probe_line(p).endswith("localisation MC 47% of 1322 failed responses / critic — of 1200")
