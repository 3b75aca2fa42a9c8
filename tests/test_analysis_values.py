"""The analysis helpers at their edges, values worked out by hand: seed groups' labels, keys and
seeds (vineppo/compare/seeds.py), the step advantages read back from episode dumps and the
per-estimator value rows (vineppo/compare/values.py), and the ranking counts of the value probe
(vineppo/probe/ranking.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vineppo.compare.runs import CompareError, Run
from vineppo.compare.seeds import (_common_label, _order, _per_seed, experiment_key, flatten, group_by_seed,
                                   group_pairs, run_seed)
from vineppo.compare.values import RunValues, _pairs, read_step_advantages, value_rows
from vineppo.probe.ranking import RankedState, ranking_counts

# ------------------------------------------------------------------------------------------ seeds


@pytest.mark.parametrize("labels, expect", [
    (["vineppo-seed0", "vineppo-seed1"], "vineppo"),
    (["only-one-seed3"], "only-one-seed3"),          # one run: its label as it is
    (["run_seed=3", "run_seed=4"], "run"),           # "run_seed=" → "run_seed" → "run_" → "run"
    (["x (seed 1)", "x (seed 2)"], "x"),             # "x (seed " → "x (seed" → "x (" → "x"
    (["runSEED1", "runSEED2"], "run"),               # the marker in any case
    (["abc", "abd", "abx"], "ab"),                   # no seed marker: the common prefix
    (["a12", "a13"], "a"),                           # trailing digits of the prefix go
])
def test_common_label_by_hand(labels, expect):
    assert _common_label(labels) == expect


def test_flatten_and_experiment_key():
    cfg = {"b": 1, "a": {"x": 2, "y": {"z": [1, 2]}}, "seed": 3, "logging": {"run_name": "r", "level": "info"}}
    assert flatten(cfg) == {"b": 1, "a.x": 2, "a.y.z": [1, 2], "seed": 3, "logging.run_name": "r",
                            "logging.level": "info"}
    assert flatten({"a": {"b": 1}}, "p.") == {"p.a.b": 1}
    # the seed and the run's name are left out, every other key kept, sorted
    assert experiment_key(cfg) == '{"a.x": 2, "a.y.z": [1, 2], "b": 1, "logging.level": "info"}'


def _run(label: str, config: dict | None, algorithm: str = "vineppo", task: str | None = "gsm8k") -> Run:
    return Run(Path(label), label, algorithm, task, [], config=config or {})


def test_run_seed_only_an_integer():
    assert run_seed(_run("a", {"seed": 7})) == 7
    assert run_seed(_run("a", {"seed": 0})) == 0
    assert run_seed(_run("a", {"seed": True})) is None   # a bool is not a seed
    assert run_seed(_run("a", {"seed": "7"})) is None
    assert run_seed(_run("a", {"x": 1})) is None


def test_groups_sort_unseeded_runs_last_and_name_colliding_labels():
    runs = [_run("exp-seed2", {"seed": 2, "mc": {"k": 9}}), _run("exp-noseed", {"mc": {"k": 9}}),
            _run("exp-seed1", {"seed": 1, "mc": {"k": 9}}),
            _run("exp-seed5", {"seed": 5, "mc": {"k": 3}}), _run("exp-seed6", {"seed": 6, "mc": {"k": 3}})]
    groups = group_by_seed(runs)
    assert [[r.label for r in g.runs] for g in groups] == [["exp-seed1", "exp-seed2", "exp-noseed"],
                                                           ["exp-seed5", "exp-seed6"]]
    # both groups' labels would be "exp": each gets what tells it apart
    assert [g.label for g in groups] == ["exp [mc.k=9]", "exp [mc.k=3]"]
    assert [g.settings for g in groups] == [{"mc.k": 9}, {"mc.k": 3}]


def test_colliding_labels_of_other_algorithms_say_the_config_differs():
    runs = [_run("exp-seed1", {"seed": 1, "algorithm": "ppo"}, "ppo"),
            _run("exp-seed2", {"seed": 2, "algorithm": "ppo"}, "ppo"),
            _run("exp-seed3", {"seed": 3, "algorithm": "grpo"}, "grpo"),
            _run("exp-seed4", {"seed": 4, "algorithm": "grpo"}, "grpo")]
    groups = group_by_seed(runs)
    # one group per algorithm: no peer of the same algorithm, so no settings to name
    assert [g.label for g in groups] == ["exp [config differs]", "exp [config differs]"]
    assert [g.settings for g in groups] == [{}, {}]


def test_per_seed_averages_repeats_and_skips_missing_values():
    (g,) = group_by_seed([_run("r-seed1", {"seed": 1, "a": 1}), _run("r-seed1b", {"seed": 1, "a": 1}),
                          _run("r-seed2", {"seed": 2, "a": 1}), _run("r-none", {"a": 1})])
    assert _per_seed(g, {"r-seed1": 0.2, "r-seed1b": 0.4, "r-seed2": None, "r-none": 0.9}) == {
        1: pytest.approx(0.3)}


def test_order_puts_known_algorithms_first_and_pairs_stay_within_a_task():
    runs = [_run(f"{a}-{t}-seed{s}", {"seed": s, "algorithm": a, "task": t}, a, t)
            for a, t in (("custom", "gsm8k"), ("rloo", "gsm8k"), ("ppo", "math"), ("vineppo", "gsm8k"))
            for s in (1, 2)]
    groups = group_by_seed(runs)
    assert [g.algorithm for g in _order(groups)] == ["vineppo", "ppo", "rloo", "custom"]
    values = {r.label: 0.1 * i for i, r in enumerate(runs)}
    pairs = group_pairs(groups, {"m": values}, metrics=["m"])
    # gsm8k: vineppo − rloo, vineppo − custom, rloo − custom; ppo (math) pairs with none
    assert [(p.a, p.b) for p in pairs] == [("vineppo-gsm8k", "rloo-gsm8k"), ("vineppo-gsm8k", "custom-gsm8k"),
                                           ("rloo-gsm8k", "custom-gsm8k")]
    # vineppo runs are 6th and 7th (0.6, 0.7), rloo 2nd and 3rd (0.2, 0.3): 0.4 on each seed
    assert pairs[0].seeds == [1, 2] and pairs[0].values == [pytest.approx(0.4), pytest.approx(0.4)]
    assert pairs[0].mean == pytest.approx(0.4) and pairs[0].sd == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------------------- values


def _dump(run: Path, name: str, lines: list[str]) -> None:
    (run / "episodes").mkdir(parents=True, exist_ok=True)
    (run / "episodes" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_read_step_advantages_in_file_order_blank_lines_and_a_cut_last_line(tmp_path):
    _dump(tmp_path, "iter_000002.rank0.jsonl", [json.dumps({"step_advantages": [0.5]})])
    # PPO's dump: critic values 0.25, 0.5 and reward 1: A = (0 + 0.5 − 0.25, 1 + 0 − 0.5)
    _dump(tmp_path, "iter_000001.rank0.jsonl", [json.dumps({"step_advantages": [1, -2]}), "",
                                                json.dumps({"critic_step_values": [0.25, 0.5], "reward": 1.0}),
                                                '{"step_adv'])
    _dump(tmp_path, "notes.jsonl", [json.dumps({"step_advantages": [9.0]})])  # not a dump: not read
    assert read_step_advantages(tmp_path) == [1.0, -2.0, 0.25, 0.5, 0.5]


def test_read_step_advantages_names_a_broken_line_that_is_not_the_last(tmp_path):
    _dump(tmp_path, "iter_000001.rank1.jsonl", ["{broken", json.dumps({"step_advantages": [1.0]})])
    with pytest.raises(CompareError, match=r"iter_000001\.rank1\.jsonl, line 1: invalid JSON \(Expecting "):
        read_step_advantages(tmp_path)


def test_pairs_and_value_rows_by_hand():
    states = [{"truth": 0.5, "mc": 0.25, "critic": 0.5}, {"truth": 1.0, "mc": 0.5}, {"truth": None, "mc": 0.1},
              {"truth": 0.0, "mc": None, "critic": 0.25}]
    assert _pairs(states, "mc") == [(0.5, 0.25), (1.0, 0.5)]
    assert _pairs(states, "critic") == [(0.5, 0.5), (0.0, 0.25)]
    alternatives = [
        # 3 alternatives: pairs (0,1) right, (0,2) wrong (tie in the estimate), (1,2) right
        {"iteration": 1, "truth": [1.0, 0.0, 0.5], "mc": [0.9, 0.1, 0.9], "critic": None},
        {"iteration": 2, "truth": [0.0, 1.0], "mc": [0.0, 1.0], "critic": [1.0, 0.0]},
    ]
    v = RunValues(_run("r", {}, "ppo"), states, alternatives)
    assert v.estimators() == ["mc", "critic"]
    rows = value_rows([v])
    # mc: MAE (0.25 + 0.5) / 2; 2 ranked states, 4 pairs, 3 right; critic: MAE (0 + 0.25) / 2, 1 pair, wrong
    assert rows == [["r", "ppo", "MC estimate", "2", "0.375", "2", "4", "75.0 %"],
                    ["r", "ppo", "critic", "2", "0.125", "1", "1", "0.0 %"]]
    only_states = RunValues(_run("s", {}, "vineppo"), [{"truth": 1.0, "mc": 1.0}], [])
    assert only_states.estimators() == ["mc"]
    assert value_rows([only_states]) == [["s", "vineppo", "MC estimate", "1", "0.000", "0", "0", "—"]]
    assert RunValues(_run("n", {}), [{"truth": 1.0}], []).estimators() == []


# ---------------------------------------------------------------------------------------- ranking


def test_ranking_counts_sum_over_states_per_estimator():
    a = RankedState(0, [[1], [2], [3]], ["a", "b", "c"], truth=[1.0, 0.0, 0.5], mc=[0.9, 0.1, 0.5],
                    critic=[0.0, 0.0, 0.0])
    b = RankedState(4, [[1], [2]], ["a", "b"], truth=[0.0, 1.0], mc=[1.0, 0.0])
    assert a.estimates() == {"mc": [0.9, 0.1, 0.5], "critic": [0.0, 0.0, 0.0]}
    assert b.estimates() == {"mc": [1.0, 0.0]}
    # mc: 3 of 3 pairs right in a, 0 of 1 in b; critic (a only): every pair tied, 0 of 3
    assert ranking_counts([a, b]) == {"mc": (3, 4), "critic": (0, 3)}
    assert ranking_counts([]) == {}
