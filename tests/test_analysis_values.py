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
from vineppo.probe.states import critic_estimates, mc_estimates, probe_metrics

# ------------------------------------------------------------------------------------------ seeds


@pytest.mark.parametrize("labels, expect", [
    (["vineppo-seed0", "vineppo-seed1"], "vineppo"),
    (["only-one-seed3"], "only-one-seed3"),          # one run: its label as it is
    (["run_seed=3", "run_seed=4"], "run"),           # "run_seed=" → "run_seed" → "run_" → "run"
    (["x (seed 1)", "x (seed 2)"], "x"),             # "x (seed " → "x (seed" → "x (" → "x"
    (["runSEED1", "runSEED2"], "run"),               # the marker in any case
    (["abc", "abd", "abx"], "ab"),                   # no seed marker: the common prefix
    (["a12", "a13"], "a"),                           # trailing digits of the prefix go
    (["runX1", "runX2"], "runX"),                    # only digits and separators are stripped
    (["runX-1", "runX-2"], "runX"),
    (["runX(seed1)", "runX(seed2)"], "runX"),
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
    # ranked alternatives but no probed state: no MAE
    only_ranked = RunValues(_run("a", {}, "vineppo"), [], [alternatives[1]])
    assert value_rows([only_ranked]) == [["a", "vineppo", "MC estimate", "0", "—", "1", "1", "100.0 %"],
                                         ["a", "vineppo", "critic", "0", "—", "1", "1", "0.0 %"]]


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


# ------------------------------------------------------------------------------------ probe states


def _branching_episodes():
    """4 questions, 2 responses each that differ from the first step on, two steps each (GSM8K's
    splitter keeps the answer line with the step before it): per question the shared s_0 and two
    s_1 (a branching state's two children), 12 unique states in all."""
    from test_values import char_episode
    from vineppo.tasks import get_task

    task = get_task("gsm8k")
    return [char_episode(task, q, f"Q{q}\nSolution:", f"\nx = {q}{j}\ny = 1\n#### 4", j=j)
            for q in range(4) for j in range(2)]


@pytest.mark.parametrize("n_states, n_pairs, n_out", [
    (1, 0, 1),     # no room for a pair
    (2, 1, 2),     # one pair fills it
    (5, 1, 5),     # pairs take at most half (5 // 2 = 2 states): one pair, 3 others
    (8, 2, 8),     # 8 // 2 = 4 states: two pairs, 4 others
    (100, 4, 12),  # every branching state's pair, then all 12 states
])
def test_probe_sample_sizes_and_pairs(n_states, n_pairs, n_out):
    import random

    from vineppo.probe.states import select_probe_states

    episodes = _branching_episodes()
    states, pairs = select_probe_states(episodes, n_states, random.Random(1))
    assert len(states) == n_out and pairs == [(2 * i, 2 * i + 1) for i in range(n_pairs)]
    keys = [(episodes[s.episode].question_index, tuple(episodes[s.episode].response_ids[: s.tokens])) for s in states]
    assert len(set(keys)) == n_out  # unique states
    for a, b in pairs:  # siblings: the two first steps of one question
        sa, sb = states[a], states[b]
        assert episodes[sa.episode].question_index == episodes[sb.episode].question_index
        assert sa.step == sb.step == 1 and sa.episode != sb.episode
        assert sa.tokens == sb.tokens == len("\nx = 00")
    # with cap 0 only the s_0 of each question gets rollouts: 4 states, no siblings
    states, pairs = select_probe_states(episodes, 8, random.Random(1), cap=0)
    assert len(states) == 4 and pairs == [] and {s.step for s in states} == {0}


def test_probe_metrics_by_hand():
    from vineppo.probe.states import ProbeResult, ProbeState

    result = ProbeResult([ProbeState(i, 0, 0) for i in range(4)], [0.2, 0.8, 0.5, 0.5], [(0, 1), (2, 3), (0, 2)], {})
    # errors 0.2, 0.4, (none), 0.4; pair (0, 1) tied in the estimate: ½; the others lack an estimate
    m = probe_metrics(result, [0.4, 0.4, None, 0.1], "x")
    assert m == {"probe/x_abs_error": pytest.approx(1.0 / 3), "probe/x_sibling_accuracy": 0.5,
                 "probe/scored_pairs": 1}
    # (0, 1) and (0, 2) ordered right; (2, 3) has equal truth: not scored
    m = probe_metrics(result, [0.1, 0.9, 0.6, 0.5], "x")
    assert m["probe/x_sibling_accuracy"] == 1.0 and m["probe/scored_pairs"] == 2
    assert m["probe/x_abs_error"] == pytest.approx((0.1 + 0.1 + 0.1 + 0.0) / 4)
    m = probe_metrics(result, [0.9, 0.1, 0.0, 0.5], "x")
    assert m["probe/x_sibling_accuracy"] == 0.0 and m["probe/scored_pairs"] == 2
    m = probe_metrics(result, [None] * 4, "y")
    assert set(m) == {"probe/y_abs_error", "probe/y_sibling_accuracy", "probe/scored_pairs"}
    assert m["probe/y_abs_error"] != m["probe/y_abs_error"] and m["probe/scored_pairs"] == 0  # NaN


def test_mc_and_critic_estimates_read_each_state_or_none():
    from vineppo.probe.states import ProbeResult, ProbeState

    episodes = _branching_episodes()[:2]
    episodes[0].step_values = [0.25, 0.75]
    episodes[0].meta["critic_values"] = [0.1, 0.2, 0.3]
    states = [ProbeState(0, 0, 0), ProbeState(0, 1, 2), ProbeState(0, 2, 3), ProbeState(1, 0, 0)]
    result = ProbeResult(states, [0.0] * 4, [], {})
    # episode 0: s_2 has no value (2 values), token 3 no critic value (3 values); episode 1: neither
    assert mc_estimates(result, episodes) == [0.25, 0.75, None, None]
    assert critic_estimates(result, episodes) == [pytest.approx(0.1), pytest.approx(0.3), None, None]
    result.mc = [0.5, 0.5, 0.5, 0.5]  # the probe's own MC estimate wins
    assert mc_estimates(result, episodes) == [0.5] * 4


# -------------------------------------------------------------------------------- cost, test vs train


def _metrics_run(rows: list[dict]) -> Run:
    return Run(Path("r"), "r", "vineppo", "gsm8k", rows)


def test_phase_cost_edges_and_json():
    from vineppo.compare.cost import _mean_of, phase_cost

    assert _mean_of([{"a": 1.0}], None) is None and _mean_of([{"b": 1.0}], "a") is None
    assert _mean_of([{"a": 1.0}, {"b": 2.0}, {"a": 5.0}], "a") == 2.0  # a row without it counts 0
    assert phase_cost(_metrics_run([{"iteration": 1, "generate/seconds": 1.0}])) is None  # no timed iteration
    # iterations of 0 s: no shares
    c = phase_cost(_metrics_run([{"iteration": 1, "seconds": 0.0, "generate/seconds": 0.0}]))
    assert c.seconds == 0.0 and c.phases[0].share is None and c.other_share is None and c.other_seconds == 0.0
    # one timed iteration of 4 s out of two rows: generate 1 s and 300 tokens, sync 1 s, other 2 s
    c = phase_cost(_metrics_run([{"iteration": 1, "generate/seconds": 9.0},
                                 {"iteration": 2, "seconds": 4.0, "generate/seconds": 1.0, "generate/tokens": 300,
                                  "sync/seconds": 1.0}]))
    assert c.to_json() == {
        "iterations": 1, "seconds_per_iteration": 4.0,
        "generate": {"seconds": 1.0, "share": 0.25, "tokens": 300.0},
        "mc": {"seconds": None, "share": None, "tokens": None},
        "logprobs": {"seconds": None, "share": None, "tokens": None},
        "train": {"seconds": None, "share": None, "tokens": None},
        "sync": {"seconds": 1.0, "share": 0.25, "tokens": None},
        "other": {"seconds": 2.0, "share": 0.5}}
    assert (c.label, c.algorithm) == ("r", "vineppo")
    # an iteration under a second still has shares: 0.25 of 0.5 s
    c = phase_cost(_metrics_run([{"iteration": 1, "seconds": 0.5, "generate/seconds": 0.25}]))
    assert c.phases[0].share == 0.5 and c.other_seconds == 0.25 and c.other_share == 0.5


def _eval_run(label: str, train: dict[int, float], test: dict[int, float]) -> Run:
    evals = {"train": {it: {"pass@1": p} for it, p in train.items()}, "test": {it: {"pass@1": p} for it, p in test.items()}}
    return Run(Path(label), label, "ppo", "gsm8k", [], evals=evals)


def test_slope_through_two_points():
    from vineppo.compare.generalization import least_squares_slope

    # two points: the line through them, (0.4 − 0.3) / (0.75 − 0.5)
    assert least_squares_slope([(0.5, 0.3), (0.75, 0.4)]) == pytest.approx(0.4)
    assert least_squares_slope([]) is None


def test_train_test_rows_by_hand():
    from vineppo.compare.generalization import train_test_points, train_test_rows

    a = _eval_run("a", {30: 0.7, 10: 0.5, 20: 0.6, 40: 0.9}, {20: 0.36, 10: 0.3, 30: 0.4, 50: 0.5})
    assert train_test_points(a) == [(10, 0.5, 0.3), (20, 0.6, 0.36), (30, 0.7, 0.4)]
    one = _eval_run("one", {10: 0.5}, {10: 0.3})
    none = _eval_run("none", {10: 0.5}, {20: 0.3})
    rows = train_test_rows([a, one, none])
    assert [r.label for r in rows] == ["a", "one"]  # no checkpoint on both splits: no row
    assert (rows[0].algorithm, rows[0].checkpoints, rows[0].first, rows[0].last) == (
        "ppo", 3, (10, 0.5, 0.3), (30, 0.7, 0.4))
    assert rows[0].slope == pytest.approx(0.5)  # as in test_least_squares_slope_hand_computed
    assert (rows[1].checkpoints, rows[1].slope, rows[1].first, rows[1].last) == (1, None, (10, 0.5, 0.3),
                                                                                  (10, 0.5, 0.3))


def test_step_advantages_of_each_kind_of_dump():
    from vineppo.compare.values import mean_abs_error, step_advantages_of

    assert step_advantages_of({}) == [] and step_advantages_of({"critic_step_values": []}) == []
    # the advantages it was trained with win, even when empty
    assert step_advantages_of({"step_advantages": [], "critic_step_values": [1.0]}) == []
    # no reward in the dump: 0; A = 0 + 0 − 0.5 (terminal V = 0)
    assert step_advantages_of({"critic_step_values": [0.5]}) == [-0.5]
    # three steps, reward 1: (0 + 0.5 − 0.25, 0 + 0.75 − 0.5, 1 + 0 − 0.75)
    assert step_advantages_of({"critic_step_values": [0.25, 0.5, 0.75], "reward": 1}) == [0.25, 0.25, 0.25]
    assert mean_abs_error([{"truth": 1.0}], "mc") == (None, 0)


def test_group_curve_is_empty_when_a_run_has_no_evaluation():
    from vineppo.compare.seeds import group_curve

    a = Run(Path("a"), "a-seed1", "ppo", "gsm8k", [], evals={"test": {10: {"pass@1": 0.5}}}, config={"seed": 1})
    b = Run(Path("b"), "a-seed2", "ppo", "gsm8k", [], evals={}, config={"seed": 2})
    (g,) = group_by_seed([a, b])
    assert group_curve(g) == []
    (g,) = group_by_seed([a])
    assert group_curve(g) == [(10, 0.5, None, 1)]  # one seed: no sd
    assert group_curve(g, "validation") == []


def test_experiment_key_writes_any_value_as_text():
    assert experiment_key({"model": {"path": Path("/m/x")}, "seed": 1}) == '{"model.path": "/m/x"}'


def test_runs_without_config_stay_apart_and_seed_zero_sorts_first():
    groups = group_by_seed([_run("a", None), _run("b", None)])
    assert [[r.label for r in g.runs] for g in groups] == [["a"], ["b"]]
    (g,) = group_by_seed([_run("r-seed1", {"seed": 1, "a": 1}), _run("r-seed0", {"seed": 0, "a": 1})])
    assert g.seeds == [0, 1]


def test_a_repeated_seed_is_warned_about_once_naming_its_runs(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="vineppo.compare.seeds"):
        group_by_seed([_run("r-seed1", {"seed": 1, "a": 1}), _run("r-seed1b", {"seed": 1, "a": 1}),
                       _run("r-seed2", {"seed": 2, "a": 1})])
    assert [r.getMessage() for r in caplog.records] == [
        "runs ['r-seed1', 'r-seed1b'] have the same config and seed 1: repeats, not seeds"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vineppo.compare.seeds"):
        group_by_seed([_run("s-seed1", {"seed": 1, "a": 1}), _run("s-seed2", {"seed": 2, "a": 1})])
    assert caplog.records == []


def test_settings_of_a_one_run_peer_and_of_a_run_without_config():
    runs = [_run("exp-seed1", {"seed": 1, "mc": {"k": 9}, "x": 1}), _run("exp-seed2", {"seed": 2, "mc": {"k": 9}, "x": 1}),
            _run("b", {"seed": 1, "mc": {"k": 3}, "x": 1}), _run("orphan", None)]
    groups = group_by_seed(runs)
    # the one-run group is compared by its only run; the run without config.yaml is a peer (same
    # algorithm and task) with no keys, so x differs too; it has no settings of its own
    assert [g.settings for g in groups] == [{"mc.k": 9, "x": 1}, {"mc.k": 3, "x": 1}, {}]
    assert [g.label for g in groups] == ["exp", "b", "orphan"]


def test_a_colliding_label_shows_the_first_three_differing_settings():
    def cfg(seed, v):
        return {"seed": seed, "a": v, "b": v, "c": v, "d": v}

    groups = group_by_seed([_run("e-seed1", cfg(1, 1)), _run("e-seed2", cfg(2, 1)),
                            _run("e-seed3", cfg(3, 2)), _run("e-seed4", cfg(4, 2))])
    assert [g.label for g in groups] == ["e [a=1, b=1, c=1]", "e [a=2, b=2, c=2]"]


def _recording_engine(continuation):
    from test_values import ScriptedEngine

    class Recording(ScriptedEngine):
        descs: list = []

        def generate(self, prompts, sampling, desc=None):
            self.descs.append(desc)
            return super().generate(prompts, sampling, desc)

    eng = Recording(continuation)
    eng.descs = []
    return eng


def test_rank_alternatives_engine_calls_and_counters_by_hand():
    from test_values import CharTokenizer  # noqa: F401  (the offset tokenizer below extends it)
    from test_probe_values import OffsetCharTokenizer, ids
    from vineppo.engine.base import SamplingParams
    from vineppo.mc import MCRequest
    from vineppo.probe.ranking import rank_alternatives
    from vineppo.tasks import get_task

    prompt, rows, right, wrong = "Q\nSolution:", [{"question": "Q", "answer": "x\n#### 4"}], "\n#### 4", "\n#### 9"

    def cont(p, n):
        if len(eng.calls) == 1:  # the alternatives: two distinct next steps from every state
            return ["\ny = 2\nz", "\ny = 3\nz"][:n]
        return ([right, wrong] if p.endswith("y = 2") else [wrong, right])[:n]  # truth first (k = 1), MC after

    eng = _recording_engine(cont)
    requests = [MCRequest(ids(prompt), ids("\nx = 1"), 0), MCRequest(ids(prompt), ids("\nx = 2"), 0)]
    kw = dict(temperature=0.6, top_p=0.9, max_new_tokens=32, max_sequence_length=1000, stop=["\n\n"])
    ranked, stats = rank_alternatives(eng, get_task("gsm8k"), OffsetCharTokenizer(), rows, requests, [3, 7],
                                      alternatives=2, min_alternatives=2, k=1, mc_k=1, seeds=(11, 12), **kw)
    assert [s for _, s in eng.calls] == [
        SamplingParams(n=2, temperature=0.6, top_p=0.9, max_new_tokens=32, stop=("\n\n",), seed=11),
        SamplingParams(n=2, temperature=0.6, top_p=0.9, max_new_tokens=32, stop=("\n\n",), seed=12)]
    assert eng.descs == ["probe: alternative steps", "probe: alternative rollouts"]
    assert [len(p) for p, _ in eng.calls] == [2, 4]  # both states ranked: 2 × 2 steps valued
    assert [(r.state, r.texts, r.truth, r.mc) for r in ranked] == [
        (3, ["\ny = 2", "\ny = 3"], [1.0, 0.0], [0.0, 1.0]), (7, ["\ny = 2", "\ny = 3"], [1.0, 0.0], [0.0, 1.0])]
    # tokens: 2 states × 2 alternatives of 8, then 4 steps × 2 rollouts of 7
    assert {k: v for k, v in stats.items() if k != "probe/ranking_seconds"} == {
        "probe/ranked_states": 2, "probe/alternative_steps": 4, "probe/ranking_tokens": 32 + 56}
    assert 0 <= stats["probe/ranking_seconds"] < 60
    # one alternative is enough when one is asked for
    eng = _recording_engine(cont)
    ranked, stats = rank_alternatives(eng, get_task("gsm8k"), OffsetCharTokenizer(), rows, requests[:1], [3],
                                      alternatives=1, min_alternatives=1, k=1, mc_k=1, seeds=(1, 2), **kw)
    assert [r.texts for r in ranked] == [["\ny = 2"]] and stats["probe/alternative_steps"] == 1
    # nothing to rank: no engine call, the counters at 0
    eng = _recording_engine(cont)
    for reqs, alternatives in (([], 2), (requests, 0)):
        assert rank_alternatives(eng, get_task("gsm8k"), OffsetCharTokenizer(), rows, reqs, [3, 7],
                                 alternatives=alternatives, min_alternatives=1, k=1, mc_k=1, seeds=(1, 2), **kw) == (
            [], {"probe/ranked_states": 0, "probe/alternative_steps": 0, "probe/ranking_tokens": 0})
    assert eng.calls == []
    with pytest.raises(ValueError, match=r"^rank_alternatives needs k >= 1 and mc_k >= 1 rollouts per step, "
                                         r"got k=0, mc_k=1$"):
        rank_alternatives(eng, get_task("gsm8k"), OffsetCharTokenizer(), rows, requests, [3, 7], alternatives=2,
                          min_alternatives=1, k=0, mc_k=1, seeds=(1, 2), **kw)


def test_next_step_to_the_end_of_a_stopped_continuation_keeps_its_eos_token():
    from test_probe_values import OffsetCharTokenizer, ids
    from vineppo.probe.ranking import next_step
    from vineppo.tasks import get_task

    class EosTokenizer(OffsetCharTokenizer):
        """Token 0 is a special token: decoded to nothing when special tokens are skipped."""

        def decode(self, token_ids, skip_special_tokens=False, **kw):
            return "".join(chr(i) for i in token_ids if not (skip_special_tokens and i == 0))

    cont = ids("\ny = 4\n#### 4") + [0]
    # the step runs to the end of the text: every remaining token is in it, the EOS token included
    assert next_step(get_task("gsm8k"), EosTokenizer(), ids("\nx = 2"), cont, stopped=True) == (cont, "\ny = 4\n#### 4")


def test_probe_metrics_of_nothing_to_score_warn_of_nothing():
    import warnings

    from vineppo.probe.states import ProbeResult, ProbeState

    result = ProbeResult([ProbeState(0, 0, 0)], [0.5], [], {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean of an empty list (numpy warns): NaN by hand
        m = probe_metrics(result, [None], "x")
    assert m["probe/x_abs_error"] != m["probe/x_abs_error"] and m["probe/x_sibling_accuracy"] != \
        m["probe/x_sibling_accuracy"]


def test_run_value_probe_engine_call_and_result_by_hand():
    import random

    from vineppo.engine.base import SamplingParams
    from vineppo.probe.states import run_value_probe, select_probe_states
    from vineppo.tasks import get_task
    from test_values import CharTokenizer

    episodes = _branching_episodes()
    rows = [{"question": f"Q{q}", "answer": "x\n#### 4"} for q in range(4)]

    def cont(p, n):  # 3 rollouts: truth (k = 2) right, right; MC (mc_k = 1) wrong
        return ["\n#### 4", "\n#### 4", "\n#### 9"][:n]

    eng = _recording_engine(cont)
    kw = dict(temperature=0.6, top_p=0.9, max_new_tokens=32, max_sequence_length=1000, stop=["\n\n"])
    res = run_value_probe(eng, get_task("gsm8k"), CharTokenizer(), rows, episodes, n_states=3, k=2, cap=0, seed=5,
                          mc_k=1, **kw)
    # cap 0: the s_0 of each question only, the sample drawn with the seed
    expect, _ = select_probe_states(episodes, 3, random.Random(5), 0)
    assert res.states == expect and res.pairs == [] and {s.step for s in res.states} == {0}
    assert [s for _, s in eng.calls] == [SamplingParams(n=3, temperature=0.6, top_p=0.9, max_new_tokens=32,
                                                        stop=("\n\n",), seed=5)]
    assert eng.descs == ["probe: rollouts"]
    assert [(r.prompt_ids, r.prefix_response_ids, r.question_index) for r in res.requests] == [
        (episodes[s.episode].prompt_ids, [], episodes[s.episode].question_index) for s in res.states]
    assert (res.truth, res.mc, res.k, res.mc_k) == ([1.0] * 3, [0.0] * 3, 2, 1)
    # 3 states × 3 rollouts of 7 tokens
    assert {k: v for k, v in res.stats.items() if k != "probe/seconds"} == {
        "probe/states": 3, "probe/sibling_pairs": 0, "probe/tokens": 63, "probe/truth_mean": 1.0}
    assert 0 <= res.stats["probe/seconds"] < 60
    # without mc_k: no MC estimate, k rollouts only
    eng = _recording_engine(cont)
    res = run_value_probe(eng, get_task("gsm8k"), CharTokenizer(), rows, episodes, n_states=2, k=2, cap=None, seed=5,
                          **kw)
    assert eng.calls[0][1].n == 2 and (res.mc, res.mc_k) == (None, 0) and res.truth == [1.0, 1.0]
    assert res.pairs == [(0, 1)] and res.stats["probe/sibling_pairs"] == 1
    # every state, in the order the seed draws (another seed's order matches it only by a rare chance)
    res = run_value_probe(_recording_engine(cont), get_task("gsm8k"), CharTokenizer(), rows, episodes, n_states=12,
                          k=2, cap=None, seed=5, **kw)
    assert res.states == select_probe_states(episodes, 12, random.Random(5), None)[0] and len(res.states) == 12
    # no episodes: no engine call
    for mc_k, mc in ((0, None), (3, [])):
        eng = _recording_engine(cont)
        res = run_value_probe(eng, get_task("gsm8k"), CharTokenizer(), rows, [], n_states=3, k=2, cap=None, seed=5,
                              mc_k=mc_k, **kw)
        assert eng.calls == [] and (res.states, res.truth, res.pairs, res.k, res.mc, res.mc_k, res.requests) == (
            [], [], [], 2, mc, mc_k, [])
        assert {k: v for k, v in res.stats.items() if k != "probe/truth_mean"} == {
            "probe/states": 0, "probe/sibling_pairs": 0, "probe/tokens": 0, "probe/seconds": 0.0}
        assert res.stats["probe/truth_mean"] != res.stats["probe/truth_mean"]  # NaN


def test_seeds_json_by_hand():
    from types import SimpleNamespace

    from vineppo.compare.seeds import PairedDifference, SeedGroup, seeds_json

    runs = [SimpleNamespace(label=f"v-seed{s}", config={"seed": s}) for s in (0, 1)]
    g = SeedGroup("v", "vineppo", "gsm8k", runs, {"mc.k": 9})
    per_run = {"selected_test": {"v-seed0": 50.0, "v-seed1": 54.0}, "last_test": {"v-seed0": 48.0},
               "peak_test": {}, "wallclock_hours": {"v-seed0": 0.5, "v-seed1": None}}
    pair = PairedDifference("v", "p", "selected_test", [0, 1], [3.0, 5.0], 4.0, 2 ** 0.5)
    out = seeds_json([g], per_run, [pair])
    assert out == {
        "groups": [{"label": "v", "algorithm": "vineppo", "task": "gsm8k", "seeds": [0, 1],
                    "runs": ["v-seed0", "v-seed1"], "settings": {"mc.k": 9},
                    "selected_test": {"mean": 52.0, "sd": pytest.approx(2 * 2 ** 0.5), "n": 2},
                    "last_test": {"mean": 48.0, "sd": None, "n": 1},
                    "peak_test": {"mean": None, "sd": None, "n": 0},
                    "wallclock_hours": {"mean": 0.5, "sd": None, "n": 1}}],
        "paired_differences": [{"a": "v", "b": "p", "metric": "selected_test", "seeds": [0, 1], "values": [3.0, 5.0],
                                "mean": 4.0, "sd": 2 ** 0.5, "n": 2}]}
