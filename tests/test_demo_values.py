"""The demo's value panel (vineppo/demo/values.py): summary.json `probe` from hand-written run
directories (metrics.jsonl and probe records), means over seeds and probed iterations."""

from __future__ import annotations

import json
import math
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
    return {"iteration": it, "question_index": step, "sample_index": 0, "step": step, "rank": 0, "truth": truth,
            "mc": None, "critic": None, **est}


def test_probe_summary_by_hand(tmp_path):
    runs = dict([
        _run(tmp_path, "vineppo-seed0", "vineppo", [
            {"iteration": 1, "reward/mean": 0.3},  # not probed
            {"iteration": 5, "probe/mc_abs_error": 0.1, "probe/mc_oracle_ranking_accuracy": 1.0,
             "probe/mc_ranking_accuracy": 0.5, "probe/mc_localisation": 0.8},
            {"iteration": 10, "probe/mc_abs_error": 0.3, "probe/mc_oracle_ranking_accuracy": 0.9,
             "probe/mc_ranking_accuracy": 0.7, "probe/mc_localisation": float("nan")},
        ], [_state(5, 0, 0.5, mc=0.4), _state(5, 1, 0.5, mc=0.8)]),
        _run(tmp_path, "vineppo-seed1", "vineppo", [
            {"iteration": 5, "probe/mc_abs_error": 0.2, "probe/mc_oracle_ranking_accuracy": 0.8,
             "probe/mc_ranking_accuracy": 0.6, "probe/mc_localisation": 0.6},
        ], [_state(5, 0, 0.2, mc=0.4)]),
        _run(tmp_path, "ppo-seed0", "ppo", [
            # PPO runs also log the MC estimator at their states: not VinePPO's, left out of mc_*
            {"iteration": 5, "probe/critic_abs_error": 0.5, "probe/critic_oracle_ranking_accuracy": 0.5,
             "probe/critic_ranking_accuracy": 0.25, "probe/critic_localisation": 0.25,
             "probe/mc_abs_error": 9.0, "probe/mc_oracle_ranking_accuracy": 0.0},
        ], [_state(5, 2, 0.5, critic=1.5, mc=0.5)]),
        _run(tmp_path, "grpo-seed0", "grpo", [{"iteration": 5, "probe/mc_abs_error": 7.0}]),
    ])
    p = probe_summary(runs)
    assert p["ranking_against"] == "oracle" and p["iterations"] == [5, 10]
    assert p["mc_ranking_accuracy"] == pytest.approx((1.0 + 0.9 + 0.8) / 3)
    assert p["mc_ranking_accuracy_rollouts"] == pytest.approx((0.5 + 0.7 + 0.6) / 3)
    assert p["mc_abs_error"] == pytest.approx((0.1 + 0.3 + 0.2) / 3)
    assert p["mc_localisation"] == pytest.approx((0.8 + 0.6) / 2)  # the NaN probe is left out
    assert p["critic_ranking_accuracy"] == 0.5 and p["critic_abs_error"] == 0.5
    assert p["critic_localisation"] == 0.25
    # by step, from the records: step 0: |0.4-0.5| and |0.4-0.2| -> 0.15; step 1: 0.3; critic step 2: 1.0
    assert p["mc_error_by_step"] == {0: pytest.approx(0.15), 1: pytest.approx(0.3)}
    assert p["critic_error_by_step"] == {2: pytest.approx(1.0)}
    line = probe_line(p)
    assert "MC 90%" in line and "critic 50%" in line
    assert plot_values(tmp_path / "values.png", runs).is_file()


def test_without_oracle_the_rollouts_order_is_used_and_missing_methods_are_none(tmp_path):
    runs = dict([_run(tmp_path, "vineppo", "vineppo", [
        {"iteration": 2, "probe/mc_abs_error": 0.25, "probe/mc_ranking_accuracy": 0.75}])])
    p = probe_summary(runs)
    assert p["ranking_against"] == "rollouts" and p["mc_ranking_accuracy"] == 0.75
    assert p["critic_ranking_accuracy"] is None and p["critic_abs_error"] is None and p["critic_error_by_step"] == {}
    assert p["mc_localisation"] is None
    assert probe_summary(dict([_run(tmp_path, "grpo", "grpo", [{"iteration": 1}])])) is None
    assert plot_values(tmp_path / "none.png", dict([_run(tmp_path, "g2", "grpo", [{"iteration": 1}])])) is None
    assert not math.isnan(p["mc_abs_error"])
