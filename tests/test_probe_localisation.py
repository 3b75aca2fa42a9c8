"""Credit localisation (vineppo/probe/localisation.py): hand-computed step advantages of failed
long-chain responses, the oracle's first wrong step, ties, and the counts the loop sums."""

from __future__ import annotations

import math

import pytest

from vineppo.episodes import Episode
from vineppo.probe import (SUMMED_METRICS, critic_step_values, is_localised, localisation_counts,
                           localisation_metrics, localisation_rates, most_negative_step, probe_iteration_metrics,
                           ranking_accuracies)
from vineppo.probe.states import ProbeResult
from vineppo.tasks import get_task

# 12 +7 -> 19, -5 -> 14, *3 -> 42, +3 -> 45, -4 -> 41 (as in tests/test_chain.py)
ROW = {"question": "Mia has 12 shells. She finds 7, gives away 5, triples them, gets 3, loses 4. How many shells now?",
       "answer": "7+12=19\n19-5=14\n14*3=42\n3+42=45\n45-4=41\n#### 41"}
# steps: "\n12+7=19", "\n19-5=14", "\n14*3=42", "\n42+3=46" (the first wrong line), "\n46-4=42\n#### 42\n"
SLIP_AT_3 = "\n12+7=19\n19-5=14\n14*3=42\n42+3=46\n46-4=42\n#### 42\n"
GOOD = "\n12+7=19\n19-5=14\n14*3=42\n42+3=45\n45-4=41\n#### 41\n"
TASK = get_task("chain")


def _episode(text: str, reward: float, step_values=None, critic_values=None, q: int = 0) -> Episode:
    bounds = TASK.split_steps(text)
    # one token per character: token t starts at character t
    e = Episode(question_index=q, sample_index=0, prompt_ids=[1], response_ids=list(range(len(text))),
                response_text=text, finished=True, truncated=False, reward=reward, step_boundaries=bounds,
                token_starts=list(range(len(text))), step_values=step_values)
    if critic_values is not None:
        e.meta["critic_values"] = critic_values
    return e


def test_most_negative_step_and_ties():
    assert most_negative_step([0.1, -0.3, 0.0, -0.2]) == 1
    assert most_negative_step([0.0, -0.5, -0.5]) is None  # shared minimum: a miss
    assert most_negative_step([]) is None
    assert most_negative_step([0.2]) == 0


def test_is_localised_by_hand():
    # V = 0.8, 0.7, 0.6, 0.5, 0.0 ; R = 0 -> A = -0.1, -0.1, -0.1, -0.5, 0.0 : step 3
    assert is_localised([0.8, 0.7, 0.6, 0.5, 0.0], 0.0, 3)
    assert not is_localised([0.8, 0.7, 0.6, 0.5, 0.0], 0.0, 2)
    # V = 0.8, 0.7, 0.6, 0.5, 0.5 ; R = 0 -> the last step gets -0.5, step 3 gets 0.0
    assert is_localised([0.8, 0.7, 0.6, 0.5, 0.5], 0.0, 4)
    # V = 0.5, 0.5, 0.0, 0.0, 0.0 -> A = 0, -0.5, 0, 0, 0 : step 1
    assert is_localised([0.5, 0.5, 0.0, 0.0, 0.0], 0.0, 1)
    # a hopeless start: every V = 0 -> every A = 0, a five-way tie: never localised
    assert not is_localised([0.0] * 5, 0.0, 0)


def test_counts_on_chain_responses():
    rows = [ROW]
    assert TASK.first_wrong_step(ROW, SLIP_AT_3) == 3
    eps = [
        _episode(SLIP_AT_3, 0.0, step_values=[0.9, 0.8, 0.8, 0.7, 0.0]),   # A: -.1, 0, -.1, -.7, 0 -> step 3: hit
        _episode(SLIP_AT_3, 0.0, step_values=[0.9, 0.2, 0.2, 0.2, 0.0]),   # A: -.7, 0, 0, -.2, 0 -> step 0: miss
        _episode(SLIP_AT_3, 0.0, step_values=[0.9, 0.9, 0.9, 0.9, 0.9]),   # A: 0, 0, 0, 0, -.9 -> step 4: miss
        _episode(GOOD, 1.0, step_values=[0.9, 0.1, 0.2, 0.3, 0.4]),        # correct: not scored
        _episode(SLIP_AT_3, 0.0, step_values=None),                        # no values: not scored
    ]
    assert localisation_counts(eps, TASK, rows, "mc") == (1, 3)
    m = localisation_metrics(eps, TASK, rows, "mc")
    assert m == {"probe/mc_localised": 1, "probe/mc_localisation_responses": 3}
    assert localisation_rates(m) == {"probe/mc_localisation": pytest.approx(1 / 3)}
    # an MC cap: values missing at the tail are back-filled with R (= 0), so the capped steps get A = 0
    capped = _episode(SLIP_AT_3, 0.0, step_values=[0.9, 0.8, 0.7, None, None])  # A: -.1, -.1, -.7, 0, 0
    assert localisation_counts([capped], TASK, rows, "mc") == (0, 1)


def test_a_task_without_oracle_scores_nothing():
    gsm = get_task("arithmetic")
    eps = [_episode(SLIP_AT_3, 0.0, step_values=[0.9, 0.8, 0.8, 0.7, 0.0])]
    assert localisation_counts(eps, gsm, [ROW], "mc") == (0, 0)
    assert localisation_metrics(eps, gsm, [ROW], "mc") == {}


def test_critic_values_are_read_at_step_starts():
    bounds = TASK.split_steps(SLIP_AT_3)
    # the critic's value at token t is t / 100: its step values are the step starts / 100
    vals = [t / 100 for t in range(len(SLIP_AT_3) + 1)]
    e = _episode(SLIP_AT_3, 0.0, critic_values=vals)
    assert critic_step_values(e) == [b / 100 for b in bounds[:-1]]
    # values cut short (a truncated forward): the steps past them have none
    short = _episode(SLIP_AT_3, 0.0, critic_values=vals[: bounds[3]])
    assert critic_step_values(short) == [b / 100 for b in bounds[:3]] + [None, None]
    # rising values: every step has A > 0 but the last (R − V(s_4) < 0) -> blamed on step 4, not 3
    assert localisation_counts([e], TASK, [ROW], "critic") == (0, 1)
    drop = [0.9] * bounds[4] + [0.1] * (len(SLIP_AT_3) + 1 - bounds[4])  # falls where step 3 ends
    assert localisation_counts([_episode(SLIP_AT_3, 0.0, critic_values=drop)], TASK, [ROW], "critic") == (1, 1)


def test_iteration_metrics_carry_the_own_estimators_counts_and_the_loop_sums_them():
    assert {"probe/mc_localised", "probe/mc_localisation_responses", "probe/critic_localised",
            "probe/critic_localisation_responses"} <= SUMMED_METRICS
    result = ProbeResult(states=[], truth=[], pairs=[], stats={"probe/states": 0})
    eps = [_episode(SLIP_AT_3, 0.0, step_values=[0.9, 0.8, 0.8, 0.7, 0.0])]
    m = probe_iteration_metrics(result, eps, "vineppo", TASK, [ROW])
    assert m["probe/mc_localised"] == 1 and m["probe/mc_localisation_responses"] == 1
    assert "probe/critic_localised" not in m
    assert "probe/mc_localised" not in probe_iteration_metrics(result, eps, "grpo", TASK, [ROW])
    # two processes' summed counts: 1 of 1 and 2 of 3 -> 3 / 4
    acc = ranking_accuracies({"probe/mc_localised": 3, "probe/mc_localisation_responses": 4})
    assert acc["probe/mc_localisation"] == 0.75
    assert math.isnan(ranking_accuracies({"probe/mc_localised": 0,
                                          "probe/mc_localisation_responses": 0})["probe/mc_localisation"])


class _CharTokenizer:
    """One token per character (ids = code points): enough for `decode_response`."""

    def decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=False):
        return "".join(chr(i) for i in ids)


def test_oracle_ranking_by_hand():
    from vineppo.probe import RankedState, oracle_pairs, oracle_ranking_score, ranking_counts

    # a_0 correct, a_1 and a_2 wrong: pairs (0, 1), (0, 2)
    assert oracle_ranking_score([0.5, 0.0, 0.25], [(0, 1), (0, 2)]) == (2, 2)
    assert oracle_ranking_score([0.5, 0.5, 0.75], [(0, 1), (0, 2)]) == (0, 2)  # a tie and an inversion
    assert oracle_ranking_score([0.1, 0.0, 0.25], [(0, 1), (0, 2)]) == (1, 2)
    prefix = "\n12+7=19\n19-5=14"
    steps = ["\n14*3=42", "\n14*3=43", "\n3*14=42", "\n14+3=17"]
    pairs = oracle_pairs(TASK, _CharTokenizer(), ROW, [ord(c) for c in prefix], steps)
    assert sorted(pairs) == [(0, 1), (0, 3), (2, 1), (2, 3)]
    assert oracle_pairs(get_task("arithmetic"), _CharTokenizer(), ROW, [ord(c) for c in prefix], steps) is None
    rs = RankedState(0, [[1]] * 4, steps, truth=[0.5, 0.0, 0.4, 0.0], mc=[0.5, 0.0, 0.0, 0.0],
                     critic=[0.3, 0.4, 0.2, 0.1], oracle_pairs=pairs)
    no_oracle = RankedState(1, [[1]] * 2, steps[:2], truth=[0.5, 0.0], mc=[0.5, 0.0], critic=[0.1, 0.2])
    # MC: (0,1) ok, (0,3) ok, (2,1) tie, (2,3) tie -> 2 of 4; critic: (0,1) no, (0,3) ok, (2,1) no, (2,3) ok
    assert ranking_counts([rs, no_oracle], oracle=True) == {"mc": (2, 4), "critic": (2, 4)}
    assert ranking_counts([no_oracle, rs], oracle=True) == {"mc": (2, 4), "critic": (2, 4)}  # skipped, not the end
    # against the rollouts' truth every pair counts, ties wrong: MC orders (0,1), (0,2), (0,3) right,
    # ties (1,2) and (2,3) in its estimate, and (1,3) in the truth; the second state's one pair right
    assert ranking_counts([rs, no_oracle])["mc"] == (3 + 1, 6 + 1)


def test_ranking_candidates_put_states_the_oracle_knows_are_lost_last():
    import random

    from vineppo.mc import MCRequest
    from vineppo.probe.iteration import ranking_candidates

    prefixes = ["\n12+7=19", "\n12+7=20", "\n12+7=19\n19-5=14", "\n12+7=19\n19-5=15", ""]
    result = ProbeResult(states=[object()] * len(prefixes), truth=[0.0] * len(prefixes), pairs=[], stats={},
                         requests=[MCRequest([1], [ord(c) for c in p], 0) for p in prefixes])
    order = ranking_candidates(TASK, _CharTokenizer(), [ROW], result, random.Random(0))
    assert sorted(order) == [0, 1, 2, 3, 4]
    assert set(order[:3]) == {0, 2, 4} and set(order[3:]) == {1, 3}  # 12+7=20 and 19-5=15 are slips
    # a task without an oracle: the plain shuffle
    plain = ranking_candidates(get_task("arithmetic"), _CharTokenizer(), [ROW], result, random.Random(0))
    shuffled = list(range(5))
    random.Random(0).shuffle(shuffled)
    assert plain == shuffled


def test_classify_by_hand():
    from vineppo.probe.localisation import classify

    assert classify([0.8, 0.7, 0.6, 0.5, 0.0], 0.0, 3) == "hit"      # A = -.1, -.1, -.1, -.5, 0
    assert classify([0.8, 0.2, 0.2, 0.2, 0.0], 0.0, 3) == "before"   # A = -.6, 0, 0, -.2, 0
    assert classify([0.8, 0.8, 0.8, 0.8, 0.8], 0.0, 3) == "after"    # A = 0, 0, 0, 0, -.8
    assert classify([0.5, 0.0, 0.5, 0.0, 0.0], 0.0, 3) == "tie"      # A = -.5, .5, -.5, 0, 0
    assert classify([0.0] * 5, 0.0, 3) == "none"                     # nothing blamed


def test_dumped_breakdown_reads_a_runs_dumps(tmp_path):
    import json

    import yaml

    from vineppo.config import TrainConfig, to_dict
    from vineppo.probe.localisation import dumped_breakdown

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps(ROW) + "\n")
    (data / "test.jsonl").write_text(json.dumps(ROW) + "\n")
    run = tmp_path / "run"
    (run / "episodes").mkdir(parents=True)
    cfg = to_dict(TrainConfig())
    cfg["algorithm"] = "vineppo"
    cfg["model"]["name_or_path"] = str(tmp_path / "model")
    cfg["data"].update(task="chain", source=str(data), validation_size=0)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    eps = [{"question_index": 0, "reward": 0.0, "response": SLIP_AT_3, "step_values": v}
           for v in ([0.8, 0.7, 0.6, 0.5, 0.0], [0.0] * 5, [0.8, 0.2, 0.2, 0.2, 0.0])]
    eps.append({"question_index": 0, "reward": 1.0, "response": GOOD, "step_values": [0.9] * 5})  # correct: skipped
    (run / "episodes" / "iter_000005.rank0.jsonl").write_text("".join(json.dumps(e) + "\n" for e in eps))
    (run / "episodes" / "iter_000006.rank0.jsonl").write_text(json.dumps(eps[0]) + "\n")
    assert dumped_breakdown(run, [5]) == {"hit": 1, "before": 1, "after": 0, "tie": 0, "none": 1}
    assert dumped_breakdown(run)["hit"] == 2
    cfg["algorithm"] = "grpo"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match="no value estimator"):
        dumped_breakdown(run)


def test_rewarded_responses_are_not_scored_even_if_an_oracle_names_a_step():
    class AlwaysStep3:
        def first_wrong_step(self, row, response):
            return 3

    ok = _episode(SLIP_AT_3, 1.0, step_values=[0.9, 0.8, 0.8, 0.7, 0.0])
    bad = _episode(SLIP_AT_3, 0.0, step_values=[0.9, 0.8, 0.8, 0.7, 0.0])
    assert localisation_counts([ok, bad], AlwaysStep3(), [ROW], "mc") == (1, 1)


def test_a_negative_reward_sits_on_the_last_step():
    # V = 0.5, 0.5, 0.5 ; R = -1 on the last step -> A = 0, 0, -1.5: step 2 (a reward on step 1
    # instead would give A = 0, -1, -0.5)
    assert is_localised([0.5, 0.5, 0.5], -1.0, 2)
    assert not is_localised([0.5, 0.5, 0.5], -1.0, 1)


class _Oracle:
    """The chain oracle, except that it names no step for the responses in `unnamed`."""

    def __init__(self, unnamed=()):
        self.unnamed = set(unnamed)

    def first_wrong_step(self, row, response):
        return None if response in self.unnamed else TASK.first_wrong_step(row, response)


def test_which_failed_responses_are_scored():
    hit = [0.9, 0.8, 0.8, 0.7, 0.0]  # A: -.1, 0, -.1, -.7, 0 -> step 3: a hit
    # a one-line response is scored: V = 0.6, R = 0 -> A = -0.6 on its only step, the wrong one
    one_line = "\n12+7=20\n#### 20\n"
    assert TASK.first_wrong_step(ROW, one_line) == 0
    assert localisation_counts([_episode(one_line, 0.0, step_values=[0.6])], TASK, [ROW], "mc") == (1, 1)
    # values of another length than the steps, or none at the first step: not scored
    assert localisation_counts([_episode(SLIP_AT_3, 0.0, step_values=[0.9, 0.8, 0.7])], TASK, [ROW], "mc") == (0, 0)
    assert localisation_counts([_episode(SLIP_AT_3, 0.0, step_values=[None, 0.8, 0.8, 0.7, 0.0])],
                               TASK, [ROW], "mc") == (0, 0)
    # values missing after the first step (an MC cap of 1): scored, A = 0 after the cap -> a tie, a miss
    assert localisation_counts([_episode(SLIP_AT_3, 0.0, step_values=[0.9, None, None, None, None])],
                               TASK, [ROW], "mc") == (0, 1)
    # a response skipped for want of values or of a named step does not end the count
    other = SLIP_AT_3.replace("46-4=42", "46-4=42 ")
    eps = [_episode(SLIP_AT_3, 0.0, step_values=None), _episode(other, 0.0, step_values=hit),
           _episode(SLIP_AT_3, 0.0, step_values=hit)]
    assert localisation_counts(eps, _Oracle(unnamed=[other]), [ROW], "mc") == (1, 1)


def test_a_one_step_response_with_nothing_blamed_is_not_localised():
    from vineppo.probe.localisation import classify

    # V = 0, R = 0: its only advantage is 0, so no step is blamed (a one-step control response
    # must not count as a hit)
    assert classify([0.0], 0.0, 0) == "none" and not is_localised([0.0], 0.0, 0)
    assert classify([0.4], 0.0, 0) == "hit" and is_localised([0.4], 0.0, 0)


def test_classify_puts_a_negative_reward_on_the_last_step():
    from vineppo.probe.localisation import classify

    # V = 0.5, 0.5, 0.5 ; R = -1 -> A = 0, 0, -1.5 (on step 1 instead: 0, -1, -0.5)
    assert classify([0.5, 0.5, 0.5], -1.0, 2) == "hit"
    assert classify([0.5, 0.5, 0.5], -1.0, 1) == "after"


def _dump_run(tmp_path, algorithm: str, key: str, dumps: dict[str, list[dict]], validation_size: int = 0,
              rows=(ROW,), validation_seed: int = 7):
    import json

    import yaml

    from vineppo.config import TrainConfig, to_dict

    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "test.jsonl").write_text(json.dumps(ROW) + "\n")
    run = tmp_path / "run"
    (run / "episodes").mkdir(parents=True, exist_ok=True)
    cfg = to_dict(TrainConfig())
    cfg["algorithm"] = algorithm
    cfg["model"]["name_or_path"] = str(tmp_path / "model")
    cfg["data"].update(task="chain", source=str(data), validation_size=validation_size,
                       validation_seed=validation_seed)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    for name, eps in dumps.items():
        for e in eps:
            e.setdefault("question_index", 0)
            if "values" in e:
                e[key] = e.pop("values")
        (run / "episodes" / name).write_text("".join(json.dumps(e) + "\n" for e in eps))
    return run


HIT = [0.8, 0.7, 0.6, 0.5, 0.0]  # A = -.1, -.1, -.1, -.5, 0: step 3


def test_dumped_breakdown_of_a_ppo_run_reads_its_critic_values(tmp_path):
    from vineppo.probe.localisation import dumped_breakdown

    run = _dump_run(tmp_path, "ppo", "critic_step_values", {
        "iter_000005.rank0.jsonl": [{"reward": 0.0, "response": SLIP_AT_3, "values": HIT}],
        "iter_000006.rank0.jsonl": [{"reward": 0.0, "response": SLIP_AT_3, "values": [0.8, 0.8, 0.8, 0.8, 0.8]}],
        # a six-digit iteration that ends like 5: not iteration 5
        "iter_100005.rank0.jsonl": [{"reward": 0.0, "response": SLIP_AT_3, "values": HIT}]})
    assert dumped_breakdown(run, [5]) == {"hit": 1, "before": 0, "after": 0, "tie": 0, "none": 0}
    # a file skipped for its iteration does not end the reading
    assert dumped_breakdown(run, [6]) == {"hit": 0, "before": 0, "after": 1, "tie": 0, "none": 0}
    assert dumped_breakdown(run, [100005])["hit"] == 1


def test_dumped_breakdown_skips_what_it_cannot_score_and_reads_on(tmp_path, monkeypatch):
    from vineppo.probe.localisation import dumped_breakdown

    import copy

    always_step_3 = copy.copy(TASK)  # the chain task, with an oracle that names a step even when rewarded
    always_step_3.first_wrong_step = lambda row, response: 3
    run = _dump_run(tmp_path, "vineppo", "step_values", {"iter_000005.rank0.jsonl": [
        {"reward": 1.0, "response": SLIP_AT_3, "values": HIT},       # rewarded: never scored
        {"reward": 0.0, "response": SLIP_AT_3, "values": None},      # no values
        {"reward": 0.0, "response": SLIP_AT_3, "values": []},
        {"reward": 0.0, "response": SLIP_AT_3, "values": [None, 0.7, 0.6, 0.5, 0.0]},  # none at s_0
        {"reward": 0.0, "response": SLIP_AT_3, "values": [0.8, None, None, None, None]},  # a cap of 1: A = -.8, 0...
        {"reward": 0.0, "response": SLIP_AT_3, "values": HIT}]})
    monkeypatch.setattr("vineppo.prompting.make_task", lambda *a, **kw: always_step_3)
    assert dumped_breakdown(run) == {"hit": 1, "before": 1, "after": 0, "tie": 0, "none": 0}


def test_dumped_breakdown_reads_the_rows_of_the_runs_own_split(tmp_path):
    # question_index counts the train rows left after the run's validation carve: with seed 1 the
    # first is ROW (with the default seed 42, the 11-shell row), so the slip is judged against ROW
    from vineppo.data import load_rows
    from vineppo.probe.localisation import dumped_breakdown

    other = {"question": ROW["question"].replace("12 shells", "11 shells"),
             "answer": "7+11=18\n18-5=13\n13*3=39\n3+39=42\n42-4=38\n#### 38"}
    third = {"question": ROW["question"].replace("12 shells", "10 shells"),
             "answer": "7+10=17\n17-5=12\n12*3=36\n3+36=39\n39-4=35\n#### 35"}
    run = _dump_run(tmp_path, "vineppo", "step_values", {"iter_000001.rank0.jsonl": [
        {"reward": 0.0, "response": SLIP_AT_3, "values": HIT}]}, validation_size=1, rows=[other, ROW, third],
        validation_seed=1)
    data = str(tmp_path / "data")
    assert load_rows("chain", "train", data, validation_size=1, seed=1)[0] == ROW
    assert load_rows("chain", "train", data, validation_size=1)[0] == other
    assert dumped_breakdown(run) == {"hit": 1, "before": 0, "after": 0, "tie": 0, "none": 0}


def test_dumped_breakdown_needs_a_task_with_an_oracle(tmp_path):
    from vineppo.probe.localisation import dumped_breakdown

    run = _dump_run(tmp_path, "vineppo", "step_values", {})
    text = (run / "config.yaml").read_text().replace("task: chain", "task: arithmetic")
    (run / "config.yaml").write_text(text)
    with pytest.raises(ValueError, match="task arithmetic has no oracle of wrong steps"):
        dumped_breakdown(run)


def test_rank_alternatives_carries_the_oracles_pairs_of_each_ranked_state():
    from test_analysis_values import _recording_engine
    from test_probe_values import OffsetCharTokenizer, ids

    from vineppo.mc import MCRequest
    from vineppo.probe.ranking import rank_alternatives

    prefix = "\n12+7=19\n19-5=14"
    steps = ["\n14*3=42\n42+3=45", "\n14*3=43\n43+3=46", "\n3*14=42\n42+3=45"]

    def cont(p, n):
        return steps[:n] if len(eng.calls) == 1 else ["\n#### 41"] * n

    eng = _recording_engine(cont)
    ranked, _ = rank_alternatives(eng, TASK, OffsetCharTokenizer(), [ROW], [MCRequest(ids("Q:"), ids(prefix), 0)],
                                  [5], alternatives=3, min_alternatives=2, k=1, mc_k=1, temperature=0.6, top_p=0.9,
                                  max_new_tokens=32, max_sequence_length=1000, stop=[], seeds=(1, 2))
    assert [r.texts for r in ranked] == [["\n14*3=42", "\n14*3=43", "\n3*14=42"]]
    # the next steps 0 and 2 are right, 1 is a slip: the oracle's pairs (right, wrong)
    assert sorted(ranked[0].oracle_pairs) == [(0, 1), (2, 1)]
