"""The MC budget: Wilson intervals, adaptive rounds, per-state diagnostics, the value-quality probe."""

from __future__ import annotations

import itertools
import random

import pytest

from test_compare import figures  # noqa: F401  (fixture)
from test_training import sft_gsm8k  # noqa: F401  (session fixture)
from test_values import CharTokenizer, ScriptedEngine, char_episode
from vineppo.config import ConfigError, load_config
from vineppo.mc import MCBudget, estimate_mc_values, round_seed, wilson_halfwidth, wilson_interval
from vineppo.probe import critic_estimates, mc_estimates, probe_metrics, run_value_probe, select_probe_states
from vineppo.tasks import get_task

TASK = get_task("gsm8k")
ROWS = [{"question": "Q", "answer": "x\n#### 4"}]
PROMPT = "Q\nSolution:"


def test_wilson_interval_matches_hand_computed_values():
    # 0 of 3, z = 1.96: upper = z² / (n + z²) = 3.8416 / 6.8416, lower 0
    lo, hi = wilson_interval(0.0, 3)
    assert lo == 0.0 and hi == pytest.approx(3.8416 / 6.8416, abs=1e-9)
    # 5 of 10: centre 0.5, half-width = 1.96 / 1.38416 · sqrt(0.025 + 3.8416 / 400) = 0.26341
    lo, hi = wilson_interval(0.5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-5) and hi == pytest.approx(0.76341, abs=1e-5)
    # 9 of 9 mirrors 0 of 9
    assert wilson_interval(1.0, 9) == pytest.approx(tuple(1 - x for x in reversed(wilson_interval(0.0, 9))))
    assert wilson_halfwidth(0.0, 6) == pytest.approx(3.8416 / 9.8416 / 2)
    assert wilson_interval(0.3, 0) == (0.0, 1.0)
    # one sample is already an interval: 1 of 1 -> centre (1 + 1.9208) / 4.8416, half 1.96 / 4.8416 x 0.98
    lo, hi = wilson_interval(1.0, 1)
    assert lo == pytest.approx(2.9208 / 4.8416 - 1.96 * 0.98 / 4.8416, abs=1e-12) and hi == 1.0
    # the bounds stay inside [0, 1] where rounding would push them out (5 of 5: 1 + 2e-16)
    assert wilson_interval(1.0, 5)[1] == 1.0 and wilson_interval(0.0, 1)[0] == 0.0
    # another z reaches the interval: 5 of 10 at z = 1: 1 / 1.1 · sqrt(0.025 + 1 / 400) = 0.150756
    assert wilson_halfwidth(0.5, 10, z=1.0) == pytest.approx(0.0275 ** 0.5 / 1.1, abs=1e-12)


def test_round_sizes_and_seeds():
    assert MCBudget(k=9).round_sizes() == [9]
    assert MCBudget(adaptive=True, k_min=3, k_max=8).round_sizes() == [3, 3, 2]
    assert MCBudget(adaptive=True, k_min=4, k_max=4).round_sizes() == [4]
    assert round_seed(5, 0) == 5 and len({round_seed(5, r) for r in range(4)}) == 4 and round_seed(None, 2) is None
    # known answers (a resumed run draws the same adaptive rounds), ints below 2^31 for the engines
    assert (round_seed(123456789, 2), round_seed(2**40 + 3, 1), round_seed(7, 3)) == (471946333, 3007928, 7023778)
    assert all(type(round_seed(s, r)) is int and 0 <= round_seed(s, r) < 2**31
               for s in (1, 2**31 - 1, 2**62) for r in (1, 2, 3))


def _episodes():
    # two different responses of one question: states s0 (shared), s1 = "\nx = 2" and s1' = "\nx = 3"
    return [char_episode(TASK, 0, PROMPT, "\nx = 2\ny = 4\n#### 4", reward=1.0, j=0),
            char_episode(TASK, 0, PROMPT, "\nx = 3\ny = 5\n#### 5", reward=0.0, j=1)]


def _mixed_or_sure(prefix, n):
    """From s0 and "x = 3": alternately right and wrong (value 1/2, never certain); from "x = 2": always right."""
    if prefix.endswith("x = 2"):
        return ["\n#### 4"] * n
    return list(itertools.islice(itertools.cycle(["\n#### 4", "\n#### 9"]), n))


def _estimate(engine, episodes, budget, k=9):
    return estimate_mc_values(engine, TASK, CharTokenizer(), ROWS, episodes, k=k, cap=None, temperature=0.6,
                              top_p=0.9, max_new_tokens=32, max_sequence_length=1000, stop=[], seed=1, budget=budget)


def test_adaptive_rounds_stop_at_k_max_one_engine_call_per_round():
    episodes = _episodes()
    eng = ScriptedEngine(_mixed_or_sure)
    budget = MCBudget(adaptive=True, k_min=3, k_max=8, target_halfwidth=0.2)
    stats = _estimate(eng, episodes, budget)
    # round 1: all 3 states; 3/3 right still has half-width 0.28 > 0.2 → round 2: all 3;
    # 6/6 right: half-width 0.195 ≤ 0.2 → done; the uncertain two get round 3 of k_max − 6 = 2
    assert [len(prompts) for prompts, _ in eng.calls] == [3, 3, 2]
    assert [p.n for _, p in eng.calls] == [3, 3, 2]
    assert len({p.seed for _, p in eng.calls}) == 3  # each round draws new samples
    assert stats["mc/engine_calls"] == 3 and stats["mc/rollouts"] == 8 + 6 + 8
    assert episodes[0].meta["mc_rollouts"] == [8, 6] and episodes[1].meta["mc_rollouts"] == [8, 8]
    assert stats["mc/rollouts_per_state_max"] == 8
    assert stats["mc/rollouts_per_state_mean"] == pytest.approx(22 / 3)
    # value = mean over all rollouts the state received: rounds of R W R | R W R | R W = 5 of 8
    assert episodes[0].step_values == pytest.approx([5 / 8, 1.0])
    assert episodes[1].step_values == pytest.approx([5 / 8, 5 / 8])
    lo, hi = episodes[0].meta["mc_interval"][1]
    assert (lo, hi) == pytest.approx(wilson_interval(1.0, 6))
    assert stats["mc/share_exact_0_or_1"] == pytest.approx(1 / 3)
    assert stats["mc/states_per_response"] == 2 and stats["mc/unique_states"] == 3
    assert stats["mc/tokens_per_episode"] == pytest.approx(stats["mc/tokens"] / 2)
    # throughput over the engine's own time (a scripted engine takes well under a second: a floor of
    # 1 s instead of the 1 ns guard against 0 would show)
    assert stats["mc/generate_seconds"] > 0
    assert stats["mc/tokens_per_s"] == pytest.approx(stats["mc/tokens"] / stats["mc/generate_seconds"])


def test_fixed_budget_is_one_call_of_k():
    eng = ScriptedEngine(_mixed_or_sure)
    episodes = _episodes()
    stats = _estimate(eng, episodes, MCBudget(k=4))
    assert [p.n for _, p in eng.calls] == [4] and stats["mc/rollouts"] == 12
    assert episodes[0].meta["mc_rollouts"] == [4, 4]
    assert stats["mc/wilson_halfwidth_mean"] == pytest.approx(
        (wilson_halfwidth(0.5, 4) * 2 + wilson_halfwidth(1.0, 4)) / 3)
    assert stats["mc/share_exact_0_or_1"] == pytest.approx(1 / 3)


def test_include_episode_outcome_adds_one_sample_per_episode_through_the_state():
    eng = ScriptedEngine(lambda p, n: ["\n#### 9"] * n)  # every rollout wrong
    episodes = _episodes()  # episode 0 is right (reward 1), episode 1 wrong
    _estimate(eng, episodes, MCBudget(k=3, include_episode_outcome=True))
    # s0 is shared by both episodes: 3 rollouts + 2 outcomes, 1 right; s1 of episode 0: 3 + 1, 1 right
    assert episodes[0].step_values == pytest.approx([1 / 5, 1 / 4])
    assert episodes[1].step_values == pytest.approx([1 / 5, 0.0])
    assert episodes[0].meta["mc_rollouts"] == [3, 3] and episodes[0].meta["mc_samples"] == [5, 4]


def test_probe_error_is_zero_on_a_deterministic_task():
    # the continuation is a function of the prefix: every state's true value is exactly 0 or 1
    def det(prefix, n):
        return ["\n#### 4" if prefix.endswith(("x = 2", "Solution:")) else "\n#### 5"] * n

    episodes = _episodes() + [char_episode(TASK, 0, PROMPT, "\nx = 2\ny = 1\nz = 0\n#### 4", reward=1.0, j=2)]
    eng = ScriptedEngine(det)
    _estimate(eng, episodes, MCBudget(adaptive=True, k_min=2, k_max=6))
    probe = run_value_probe(eng, TASK, CharTokenizer(), ROWS, episodes, n_states=10, k=64, cap=None,
                            temperature=0.6, top_p=0.9, max_new_tokens=32, max_sequence_length=1000, stop=[], seed=3)
    assert eng.calls[-1][1].n == 64 and len(eng.calls[-1][0]) == probe.stats["probe/states"] == 4
    m = probe_metrics(probe, mc_estimates(probe, episodes), "mc")
    assert m["probe/mc_abs_error"] == 0.0
    assert m["probe/mc_sibling_accuracy"] == 1.0 and m["probe/scored_pairs"] >= 1
    # a critic that says 0.5 everywhere is off by 0.5 on each 0/1 state and cannot rank siblings
    for e in episodes:
        e.meta["critic_values"] = [0.5] * (len(e.response_ids) + 1)
    c = probe_metrics(probe, critic_estimates(probe, episodes), "critic")
    assert c["probe/critic_abs_error"] == pytest.approx(0.5) and c["probe/critic_sibling_accuracy"] == 0.5


def test_probe_sample_starts_with_sibling_pairs_and_is_seeded():
    episodes = _episodes()
    states, pairs = select_probe_states(episodes, 3, random.Random(0))
    assert len(states) == 3 and pairs == [(0, 1)]
    a, b = states[0], states[1]
    assert a.step == b.step == 1 and {a.episode, b.episode} == {0, 1}  # the two different first steps
    again, _ = select_probe_states(episodes, 3, random.Random(0))
    assert again == states


def test_config_adaptive_and_probe(tmp_path):
    cfg = load_config(None, ["model.name_or_path=x", "mc.adaptive=true", "mc.k_min=2", "mc.k_max=12",
                             "probe.every=5"])
    assert cfg.mc.adaptive and cfg.mc.k_max == 12 and cfg.probe.every == 5 and cfg.probe.k == 64
    assert load_config(None, ["model.name_or_path=x"]).probe.every == 0  # off by default
    from vineppo.loop import mc_budget

    # the episode's own outcome: on with adaptive MC unless turned off, off with the paper's fixed K
    assert mc_budget(cfg).include_episode_outcome and mc_budget(cfg).adaptive
    plain = mc_budget(load_config(None, ["model.name_or_path=x"]))
    assert not plain.adaptive and not plain.include_episode_outcome and plain.round_sizes() == [9]
    assert not mc_budget(load_config(None, ["model.name_or_path=x", "mc.adaptive=true",
                                            "mc.include_episode_outcome=false"])).include_episode_outcome
    with pytest.raises(ConfigError, match="k_min"):
        load_config(None, ["model.name_or_path=x", "mc.adaptive=true", "mc.k_min=5", "mc.k_max=3"])
    with pytest.raises(ConfigError, match="target_halfwidth"):
        load_config(None, ["model.name_or_path=x", "mc.adaptive=true", "mc.target_halfwidth=0"])



def test_compare_plots_value_error_only_for_probed_runs(tmp_path, figures):
    import json

    from test_compare import PNG_MAGIC, make_run, plotted
    from vineppo.compare import VALUE_ERROR_PLOT, compare

    ppo = make_run(tmp_path, "ppo", "ppo", 1.0, test={2: 0.3}, validation={2: 0.3}, iterations=4)
    vine = make_run(tmp_path, "vine", "vineppo", 1.0, test={2: 0.4}, validation={2: 0.4}, iterations=4)
    res = compare([ppo, vine], tmp_path / "plain", print_table=False)
    assert "value_error_vs_iteration" not in res.plots and not (tmp_path / "plain" / VALUE_ERROR_PLOT).exists()
    for run, key in ((ppo, "probe/critic_abs_error"), (vine, "probe/mc_abs_error")):
        rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        for r in rows:
            if r["iteration"] % 2 == 0:
                r[key] = 0.3 / r["iteration"]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = compare([ppo, vine], tmp_path / "probed", print_table=False)
    data = res.plots["value_error_vs_iteration"].read_bytes()
    assert res.plots["value_error_vs_iteration"].name == VALUE_ERROR_PLOT
    assert data.startswith(PNG_MAGIC)
    lines = plotted(figures[VALUE_ERROR_PLOT])
    assert lines["ppo (critic)"] == ([2, 4], pytest.approx([0.15, 0.075]))
    assert lines["vine (MC estimate)"] == ([2, 4], pytest.approx([0.15, 0.075]))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["vineppo", "ppo"])
def test_training_logs_adaptive_mc_and_probe_metrics(algorithm, sft_gsm8k, tmp_path):
    import json

    from test_training import tiny_cfg
    from vineppo.loop import train

    model_dir, data_dir = sft_gsm8k
    cfg = tiny_cfg(model_dir, data_dir, algorithm, "iterations=1", "save_every=1", "mc.adaptive=true",
                   "mc.k_min=2", "mc.k_max=6", "probe.every=1", "probe.states=6", "probe.k=8",
                   "probe.alternatives=4", "probe.min_alternatives=2", "probe.ranking_states=6",
                   "logging.dump_episodes=true")
    run = train(cfg, tmp_path / "run").run_dir
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["probe/states"] == 6 and row["probe/tokens"] > 0
    name = "mc" if algorithm == "vineppo" else "critic"
    assert 0 <= row[f"probe/{name}_abs_error"] <= 1
    # every probed state on record, with the estimators of its algorithm next to the truth
    from vineppo.probe import ranking_score, read_records

    states = read_records(run, "states")
    assert len(states) == 6 and {(r["iteration"], r["rank"]) for r in states} == {(1, 0)}
    for r in states:
        assert 0 <= r["step"] < r["num_steps"] and 0 <= r["truth"] <= 1 and r["truth_rollouts"] == 8
        assert r["mc"] is not None and (r["critic"] is not None) == (algorithm == "ppo")
        assert r["estimator"] == name and r["oracle"] is None
    # PPO's MC estimate is the probe's own mc.k = 3 rollouts, at the same states as its critic's
    assert all(r["mc_rollouts"] == 3 for r in states) or algorithm == "vineppo"
    assert row["probe/mc_abs_error"] == pytest.approx(sum(abs(r["mc"] - r["truth"]) for r in states) / 6)
    # the ranking of alternative steps: its metrics are the records' pairs
    alts = read_records(run, "alternatives")
    assert row["probe/ranked_states"] == len(alts) >= 1
    for est in ("mc", "critic") if algorithm == "ppo" else ("mc",):
        correct, pairs = map(sum, zip(*(ranking_score(a["truth"], a[est]) for a in alts)))
        assert row[f"probe/{est}_ranking_pairs"] == pairs
        if pairs:
            assert row[f"probe/{est}_ranking_accuracy"] == pytest.approx(correct / pairs)
    for a in alts:
        assert len(set(a["steps"])) == len(a["steps"]) >= 2 and len(a["truth"]) == len(a["mc"]) == len(a["steps"])
        assert (a["critic"] is not None) == (algorithm == "ppo")
    if algorithm == "ppo":
        ep = json.loads((run / "episodes" / "iter_000001.rank0.jsonl").read_text().splitlines()[0])
        assert len(ep["critic_step_values"]) == len(ep["step_boundaries"]) - 1
    if algorithm == "vineppo":
        assert 2 <= row["mc/rollouts_per_state_mean"] <= row["mc/rollouts_per_state_max"] <= 6
        for key in ("mc/wilson_halfwidth_mean", "mc/share_exact_0_or_1", "mc/tokens_per_episode",
                    "mc/states_per_response"):
            assert key in row, key
        ep = json.loads((run / "episodes" / "iter_000001.rank0.jsonl").read_text().splitlines()[0])
        n = len([v for v in ep["step_values"] if v is not None])
        assert len(ep["step_mc_rollouts"]) == len(ep["step_mc_intervals"]) == n
        assert all(lo <= v <= hi for v, (lo, hi) in zip(ep["step_values"], ep["step_mc_intervals"]))


def test_adaptive_rounds_judge_the_interval_over_every_sample_episode_outcomes_included():
    """The shipped combination (mc.adaptive with the free episode outcomes): 8 right samples of one
    question share s0; 3 right rollouts + 8 outcomes = 11 of 11 has Wilson half-width 0.13 ≤ 0.2,
    so s0 stops after round 1 (3 rollouts alone would be 0.28 and go on)."""
    eng = ScriptedEngine(lambda p, n: ["\n#### 4"] * n)
    episodes = [char_episode(TASK, 0, PROMPT, "\n#### 4", reward=1.0, j=j) for j in range(8)]
    assert all(e.num_steps == 1 for e in episodes)
    budget = MCBudget(adaptive=True, k_min=3, k_max=9, target_halfwidth=0.2, include_episode_outcome=True)
    assert wilson_halfwidth(1.0, 11) <= 0.2 < wilson_halfwidth(1.0, 3)
    stats = _estimate(eng, episodes, budget)
    assert stats["mc/engine_calls"] == 1 and [p.n for _, p in eng.calls] == [3]
    assert episodes[0].meta["mc_rollouts"] == [3] and episodes[0].meta["mc_samples"] == [11]
    assert episodes[0].step_values == [1.0]
    # mixed: the rollouts are wrong; the value is over all samples, 8 of 11
    eng = ScriptedEngine(lambda p, n: ["\n#### 9"] * n)
    episodes = [char_episode(TASK, 0, PROMPT, "\n#### 4", reward=1.0, j=j) for j in range(8)]
    _estimate(eng, episodes, budget)
    n = episodes[0].meta["mc_samples"][0]
    assert episodes[0].step_values == pytest.approx([8 / n]) and n == 8 + episodes[0].meta["mc_rollouts"][0]


def test_run_mc_rounds_sampling_seeds_and_counters_by_hand():
    import time

    import numpy as np

    from vineppo.engine.base import SamplingParams
    from vineppo.mc import MCRequest, request_seed, run_mc_rounds

    prompt = [ord(c) for c in PROMPT]
    reqs = [MCRequest(prompt, [ord(c) for c in "\nx = 2"], 0), MCRequest(prompt, [ord(c) for c in "\nx = 3"], 0)]

    def run(engine, seed, budget=MCBudget(k=2)):
        sums, samples = np.zeros(2), np.zeros(2, dtype=np.int64)
        t = time.perf_counter()
        rollouts, counters = run_mc_rounds(engine, TASK, CharTokenizer(), ROWS, reqs, sums, samples, budget,
                                           temperature=0.6, top_p=0.9, max_new_tokens=32, max_sequence_length=1000,
                                           stop=["\n\n"], seed=seed)
        return sums, samples, rollouts, counters, time.perf_counter() - t

    eng = ScriptedEngine(_mixed_or_sure)
    sums, samples, rollouts, counters, wall = run(eng, 5)
    # one call, K = 2: "x = 2" always right (2), "x = 3" right then wrong (1); each state its own seed
    assert eng.calls[0][1] == SamplingParams(n=2, temperature=0.6, top_p=0.9, max_new_tokens=32, stop=("\n\n",),
                                             seed=5, request_seeds=(request_seed(5, reqs[0]), request_seed(5, reqs[1])))
    assert sums.tolist() == [2.0, 1.0] and samples.tolist() == [2, 2]
    assert rollouts.tolist() == [2, 2] and rollouts.dtype == np.int64
    # 4 continuations of 7 characters ("\n#### 4" / "\n#### 9")
    assert (counters["engine_calls"], counters["tokens"]) == (1, 28)
    assert 0 <= counters["generate_seconds"] <= wall and 0 <= counters["grade_seconds"] <= wall
    # an engine that gives a call one seed (the official code's common random numbers), or no seed
    eng.shared_request_seed = True
    run(eng, 5)
    assert eng.calls[-1][1].request_seeds is None and eng.calls[-1][1].seed == 5
    plain = ScriptedEngine(_mixed_or_sure)
    run(plain, None)
    assert plain.calls[-1][1].request_seeds is None and plain.calls[-1][1].seed is None


def test_an_adaptive_state_exactly_at_the_target_half_width_stops():
    import numpy as np

    from vineppo.mc import MCRequest, run_mc_rounds

    prompt = [ord(c) for c in PROMPT]
    reqs = [MCRequest(prompt, [ord(c) for c in "\nx = 3"], 0)]
    sums, samples = np.zeros(1), np.zeros(1, dtype=np.int64)
    # round 1: right, wrong -> 1/2 over 2; the target is exactly that half-width: no round 2
    budget = MCBudget(adaptive=True, k_min=2, k_max=6, target_halfwidth=wilson_halfwidth(0.5, 2))
    descs = []

    class Named(ScriptedEngine):  # records the progress bar's title of each call
        def generate(self, prompts, sampling, desc=None):
            descs.append(desc)
            return super().generate(prompts, sampling, desc)

    eng = Named(_mixed_or_sure)
    kw = dict(temperature=0.6, top_p=0.9, max_new_tokens=32, max_sequence_length=1000, stop=[], seed=1)
    run_mc_rounds(eng, TASK, CharTokenizer(), ROWS, reqs, sums, samples, budget, **kw)
    assert len(eng.calls) == 1 and samples.tolist() == [2]
    # two rounds when the target is a little tighter; a fixed budget's one call has no round number
    budget.target_halfwidth -= 1e-9
    run_mc_rounds(eng, TASK, CharTokenizer(), ROWS, reqs, np.zeros(1), np.zeros(1, dtype=np.int64), budget, **kw)
    run_mc_rounds(eng, TASK, CharTokenizer(), ROWS, reqs, np.zeros(1), np.zeros(1, dtype=np.int64), MCBudget(k=2), **kw)
    assert descs == ["mc: rollouts (round 1)", "mc: rollouts (round 1)", "mc: rollouts (round 2)", "mc: rollouts"]


def test_mc_counters_sum_over_rounds_on_a_fake_clock(monkeypatch):
    import itertools as it

    import numpy as np

    import vineppo.mc as mc
    from vineppo.mc import MCRequest, run_mc_rounds

    clock = it.count()  # every reading of the clock is one second after the last
    monkeypatch.setattr(mc.time, "perf_counter", lambda: float(next(clock)))
    reqs = [MCRequest([ord(c) for c in PROMPT], [ord(c) for c in "\nx = 3"], 0)]
    budget = MCBudget(adaptive=True, k_min=2, k_max=4, target_halfwidth=0.01)  # never certain: 2 rounds
    _, counters = run_mc_rounds(ScriptedEngine(_mixed_or_sure), TASK, CharTokenizer(), ROWS, reqs, np.zeros(1),
                                np.zeros(1, dtype=np.int64), budget, temperature=0.6, top_p=0.9, max_new_tokens=32,
                                max_sequence_length=1000, stop=[], seed=1)
    # per round: one second generating, one grading; 2 continuations of 7 characters
    assert counters == {"engine_calls": 2, "tokens": 28, "generate_seconds": 2.0, "grade_seconds": 2.0}


def test_the_mc_cap_and_a_group_of_one_process():
    from vineppo.mc_balance import RankGroup

    episodes = _episodes()
    stats = estimate_mc_values(ScriptedEngine(_mixed_or_sure), TASK, CharTokenizer(), ROWS, episodes, k=2, cap=0,
                               temperature=0.6, top_p=0.9, max_new_tokens=32, max_sequence_length=1000, stop=[],
                               seed=1, group=RankGroup(0, 1, lambda obj: [obj]))
    # cap 0: only s0 (shared by both responses) is valued; s1 is left to the back-fill
    assert [e.step_values for e in episodes] == [[0.5, None], [0.5, None]]
    assert stats["mc/unique_states"] == 1 and stats["mc/states"] == 2
    # one process: no balancing and no imbalance to report
    assert "mc/imbalance" not in stats and "mc/rank_seconds_max" not in stats


def test_mc_timing_stats_on_a_fake_clock(monkeypatch):
    import itertools as it

    import vineppo.mc as mc
    from vineppo.mc_balance import RankGroup

    clock = it.count(10, 2)  # each reading two seconds after the last, from 10
    monkeypatch.setattr(mc.time, "perf_counter", lambda: float(next(clock)))
    sent = []

    def gather(obj):  # this rank and a slower one (100 s)
        sent.append(obj)
        return [obj, 100.0]

    stats = estimate_mc_values(ScriptedEngine(_mixed_or_sure), TASK, CharTokenizer(), ROWS, _episodes(), k=2,
                               cap=None, temperature=0.6, top_p=0.9, max_new_tokens=32, max_sequence_length=1000,
                               stop=[], seed=1, group=RankGroup(0, 2, gather), balance=None)
    # readings: 10 start, 12 before the rollouts, 14-16 generating, 18-20 grading, 22 after them, 24 at the end
    assert sent == [10.0]
    assert (stats["mc/generate_seconds"], stats["mc/grade_seconds"], stats["mc/seconds"]) == (2.0, 2.0, 14.0)
    assert stats["mc/rank_seconds_max"] == 100.0 and stats["mc/imbalance"] == 100.0 / 55.0
    # 3 states x 2 continuations of 7 characters in 2 seconds, over 2 episodes
    assert (stats["mc/tokens"], stats["mc/tokens_per_s"], stats["mc/tokens_per_episode"]) == (42, 21.0, 21.0)


def test_one_rollout_per_state_and_a_response_without_steps():
    from vineppo.episodes import Episode

    one = [char_episode(TASK, 0, PROMPT, "\nx = 2\ny = 4\n#### 4", reward=1.0)]
    stats = estimate_mc_values(ScriptedEngine(_mixed_or_sure), TASK, CharTokenizer(), ROWS, one, k=1, cap=None,
                               temperature=0.6, top_p=0.9, max_new_tokens=32, max_sequence_length=1000, stop=[], seed=1)
    # K = 1: each value is its one rollout's reward (s0: right first, "x = 2": right)
    assert one[0].step_values == [1.0, 1.0] and stats["mc/tokens_per_episode"] == 14.0
    # an empty response has no state: no engine call, no values
    empty = Episode(question_index=0, sample_index=0, prompt_ids=[1], response_ids=[], response_text="",
                    finished=False, truncated=True, reward=0.0, step_boundaries=[0], token_starts=[])
    eng = ScriptedEngine(_mixed_or_sure)
    estimate_mc_values(eng, TASK, CharTokenizer(), ROWS, [empty], k=2, cap=None, temperature=0.6, top_p=0.9,
                       max_new_tokens=32, max_sequence_length=1000, stop=[], seed=1)
    assert empty.step_values == [] and eng.calls == []


def test_mc_value_statistics_by_hand():
    def half_wrong(prefix, n):  # s0: right, wrong, ...; after "x = 2": always wrong
        return ["\n#### 9"] * n if prefix.endswith("x = 2") else _mixed_or_sure(prefix, n)

    one = [char_episode(TASK, 0, PROMPT, "\nx = 2\ny = 4\n#### 4", reward=1.0)]
    stats = estimate_mc_values(ScriptedEngine(half_wrong), TASK, CharTokenizer(), ROWS, one, k=2, cap=None,
                               temperature=0.6, top_p=0.9, max_new_tokens=32, max_sequence_length=1000, stop=[], seed=1)
    # values 0.5 (s0) and 0.0 (s1), 2 samples each
    assert one[0].step_values == [0.5, 0.0]
    assert stats["mc/states_per_response"] == 2.0
    assert (stats["mc/rollouts_per_state_mean"], stats["mc/rollouts_per_state_max"]) == (2.0, 2)
    assert stats["mc/share_exact_0_or_1"] == 0.5
    assert (stats["mc/value_mean"], stats["mc/value_variance"]) == (0.25, 0.0625)
    # V (1 - V) / n: 0.25 / 2 and 0
    assert stats["mc/estimate_variance"] == 0.0625
    assert stats["mc/wilson_halfwidth_mean"] == pytest.approx((wilson_halfwidth(0.5, 2) + wilson_halfwidth(0.0, 2)) / 2)


def test_the_mc_cap_counts_states_after_s0():
    from vineppo.mc import mc_state_token_counts

    e = char_episode(TASK, 0, PROMPT, "\nx = 2\ny = 4\nz = 6\n#### 6")  # 3 steps: s0, s1, s2
    every = mc_state_token_counts(e, None)
    assert every == [0, 6, 12]
    assert mc_state_token_counts(e, 10) == mc_state_token_counts(e, 2) == every  # a cap past the last state
    assert mc_state_token_counts(e, 1) == [0, 6] and mc_state_token_counts(e, 0) == [0]
