"""The value probe's analyses: ranking of alternative next steps (ties wrong, equal truths
skipped), cutting a continuation at the next step boundary, per-state records written per process
and merged, the probe's engine calls, the critic's values at arbitrary states, the reduction of
ranking counts over processes, the arithmetic oracle, and compare's value plots and table."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from test_compare import PNG_MAGIC, figures, make_run, plotted  # noqa: F401  (fixture)
from test_values import CharTokenizer, ScriptedEngine, char_episode
from vineppo.config import ConfigError, ProbeConfig, load_config
from vineppo.engine.base import Completion
from vineppo.mc import MCRequest, round_seed
from vineppo.probe import (SUMMED_METRICS, next_step, distinct_next_steps, probe_iteration_metrics, rank_alternatives,
                           ranking_accuracies, ranking_score, read_records, run_probe, truncate_records,
                           write_probe_records)
from vineppo.probe.records import append_records
from vineppo.tasks import get_task

TASK = get_task("gsm8k")
ROWS = [{"question": "Q", "answer": "x\n#### 4"}]
PROMPT = "Q\nSolution:"


class OffsetCharTokenizer(CharTokenizer):
    """One token per character, with the offset mapping `token_char_starts` asks for."""

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        out = {"input_ids": [ord(c) for c in text]}
        if return_offsets_mapping:
            out["offset_mapping"] = [(i, i + 1) for i in range(len(text))]
        return out


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


# ---- the ranking score ---------------------------------------------------------------------------

def test_ranking_score_counts_ties_wrong_as_the_official_analyzer():
    truth = [0.5, 0.25, 0.5, 1.0]
    estimate = [0.4, 0.4, 0.1, 0.9]
    # (0,1) truth differs, estimate ties → wrong; (0,2) equal truth → wrong (product 0); (0,3) right;
    # (1,2) truth 0.25 < 0.5 but estimate 0.4 > 0.1 → wrong; (1,3) right; (2,3) right
    assert ranking_score(truth, estimate) == (3, 6)
    assert ranking_score(truth, estimate, skip_equal_truth=True) == (3, 5)
    assert ranking_score(truth, [0.7] * 4) == (0, 6)  # a constant critic orders nothing: 0 %, not 50 %
    assert ranking_score([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]) == (0, 3)
    assert ranking_score([1.0, 1.0, 1.0], [0.1, 0.2, 0.3], skip_equal_truth=True) == (0, 0)
    assert ranking_score([0.0, 1.0], [0.9, 0.1]) == (0, 1)
    assert ranking_score([0.0, 1.0], [0.1, 0.9]) == (1, 1)
    with pytest.raises(ValueError, match="3 true values but 2"):
        ranking_score([0.0, 1.0, 0.5], [0.1, 0.2])


# ---- cutting a continuation at the next step boundary --------------------------------------------

def test_next_step_cuts_the_continuation_at_the_next_boundary():
    tok = OffsetCharTokenizer()
    prefix = ids("\nx = 2")
    # GSM8K steps are lines: the next step of "\nx = 2" + "\ny = 5\nz = 6\n#### 6" is "\ny = 5"
    step, text = next_step(TASK, tok, prefix, ids("\ny = 5\nz = 6\n#### 6"), stopped=True)
    assert text == "\ny = 5" and step == ids("\ny = 5")
    # from s0 (empty prefix) the first step
    assert next_step(TASK, tok, [], ids("\nx = 3\ny = 4\n#### 4"), stopped=True)[1] == "\nx = 3"
    # cut by the length limit after the step ended: the step is whole
    assert next_step(TASK, tok, prefix, ids("\ny = 5\nz"), stopped=False)[1] == "\ny = 5"
    # cut by the length limit inside the step: no whole step
    assert next_step(TASK, tok, prefix, ids("\ny = 5"), stopped=False) is None
    # stopped by itself: the rest is the last step
    assert next_step(TASK, tok, prefix, ids("\ny = 4\n#### 4"), stopped=True)[1] == "\ny = 4\n#### 4"
    # the answer tail merges into the prefix's last step: no boundary at the prefix's end
    assert next_step(TASK, tok, prefix, ids("\n#### 4"), stopped=True) is None
    assert next_step(TASK, tok, prefix, [], stopped=True) is None


def test_next_step_tokens_end_where_the_step_text_ends_with_a_real_tokenizer(tiny_tokenizer):
    """Multi-character BPE tokens: prefix + step tokens decode to prefix + step text, and the step
    ends exactly at the joined text's next boundary (the MC state a response would reach)."""
    from vineppo.tokens import decode_response

    prefix_text = "\nNatalia sold 48 clips."
    prefix = tiny_tokenizer(prefix_text, add_special_tokens=False)["input_ids"]
    cont = tiny_tokenizer("\nShe sold 24 in May.\nSo 72 in all.\n#### 72", add_special_tokens=False)["input_ids"]
    step, text = next_step(TASK, tiny_tokenizer, prefix, cont, stopped=True)
    assert text == "\nShe sold 24 in May."
    assert decode_response(tiny_tokenizer, prefix + step) == prefix_text + text
    assert step == cont[: len(step)]


def test_distinct_next_steps_keep_first_sampled_order():
    tok = OffsetCharTokenizer()
    comps = [Completion(ids(t), t, r) for t, r in [("\ny = 5\n#### 5", "stop"), ("\ny = 3\nz", "length"),
                                                   ("\ny = 5\nw = 1", "length"), ("\n#### 4", "stop"),
                                                   ("\ny", "length")]]
    steps = distinct_next_steps(TASK, tok, ids("\nx = 2"), comps)
    assert [t for _, t in steps] == ["\ny = 5\n#### 5", "\ny = 3", "\ny = 5"]


# ---- ranking alternatives through an engine -------------------------------------------------------

R, W = "\n#### 4", "\n#### 9"


def _alternatives(prefix: str, n: int) -> list[str]:
    if prefix.endswith("x = 1"):  # four samples, three distinct next steps
        return ["\ny = 2\nz", "\ny = 3\nz", "\ny = 2\nq", "\ny = 9\nz", "\ny = 2\nz"][:n]
    return ["\ny = 7\nz"] * n  # one distinct step only: not ranked


def _values(prefix: str, n: int) -> list[str]:
    if prefix.endswith("y = 2"):
        return [R] * n  # truth 1, MC 1
    if prefix.endswith("y = 3"):
        return [R, W, R, W, W, W][:n]  # truth (first 4) 1/2, MC (last 2) 0
    return [W] * n  # y = 9: truth 0, MC 0


def test_rank_alternatives_values_each_step_and_scores_the_estimators():
    eng = ScriptedEngine(lambda p, n: (_alternatives if len(eng.calls) == 1 else _values)(p[len(PROMPT):], n))
    requests = [MCRequest(ids(PROMPT), ids("\nx = 1"), 0), MCRequest(ids(PROMPT), ids("\nx = 5"), 0)]
    ranked, stats = rank_alternatives(eng, TASK, OffsetCharTokenizer(), ROWS, requests, [3, 7], alternatives=5,
                                      min_alternatives=3, k=4, mc_k=2, temperature=0.6, top_p=0.9,
                                      max_new_tokens=32, max_sequence_length=1000, stop=[], seeds=(11, 12))
    assert [(len(p), s.n, s.seed) for p, s in eng.calls] == [(2, 5, 11), (3, 6, 12)]
    assert len(ranked) == 1 and ranked[0].state == 3
    rs = ranked[0]
    assert rs.texts == ["\ny = 2", "\ny = 3", "\ny = 9"]
    assert ["".join(map(chr, p)) for p in eng.calls[1][0]] == [PROMPT + "\nx = 1" + t for t in rs.texts]
    assert rs.truth == [1.0, 0.5, 0.0] and rs.mc == [1.0, 0.0, 0.0]
    # MC ties y = 3 and y = 9 (truth 1/2 vs 0): wrong; the other two pairs right
    assert ranking_score(rs.truth, rs.mc) == (2, 3)
    assert stats["probe/ranked_states"] == 1 and stats["probe/alternative_steps"] == 3
    with pytest.raises(ValueError, match="mc_k"):
        rank_alternatives(eng, TASK, OffsetCharTokenizer(), ROWS, requests, [3, 7], alternatives=5,
                          min_alternatives=3, k=4, mc_k=0, temperature=0.6, top_p=0.9, max_new_tokens=32,
                          max_sequence_length=1000, stop=[], seeds=(11, 12))


# ---- the probe of one iteration, its records, merged over processes -------------------------------

def _probe_episodes():
    # responses: states s0 (shared), s1 = "\nx = 1" and s1' = "\nx = 5"
    return [char_episode(TASK, 0, PROMPT, "\nx = 1\ny = 2\n#### 4", reward=1.0, j=0),
            char_episode(TASK, 0, PROMPT, "\nx = 5\ny = 7\n#### 7", reward=0.0, j=1)]


def _probe_engine():
    def cont(prompt, n):
        prefix = prompt[len(PROMPT):]
        if eng.calls[-1][1].n == 5:
            return _alternatives(prefix, n)
        if prefix in ("", "\nx = 1"):  # the states: truth alternating R W, MC rollouts after it
            return list(itertools.islice(itertools.cycle([R, W]), n))
        if prefix == "\nx = 5":
            return [W] * n
        return _values(prefix, n)
    eng = ScriptedEngine(cont)
    return eng


def _run_probe(algorithm, pcfg=None):
    episodes = _probe_episodes()
    if algorithm == "vineppo":
        for e, v in zip(episodes, ([0.25, 0.75], [0.25, 0.0])):
            e.step_values = v
            e.meta["mc_samples"] = [9, 9]
    eng = _probe_engine()
    result = run_probe(eng, TASK, OffsetCharTokenizer(), ROWS, episodes, pcfg or ProbeConfig(every=1, states=8, k=4),
                       algorithm=algorithm, mc_k=2, cap=None, temperature=0.6, top_p=0.9, max_new_tokens=32,
                       max_sequence_length=1000, stop=[], seed=5)
    return result, episodes, eng


def test_probe_draws_the_mc_estimator_with_the_truth_for_runs_without_mc_values():
    result, episodes, eng = _run_probe("grpo")
    # states call: n = probe.k + mc.k; then the alternatives (n = 5) and their values (n = 4 + 2)
    assert [s.n for _, s in eng.calls] == [6, 5, 6]
    assert [s.seed for _, s in eng.calls] == [5, round_seed(5, 1), round_seed(5, 2)]
    assert sorted(s.tokens for s in result.states) == [0, 6, 6]
    # s0 and "\nx = 1": R W R W | R W → truth 1/2, MC 1/2; "\nx = 5": all wrong
    assert sorted(zip(result.truth, result.mc)) == [(0.0, 0.0), (0.5, 0.5), (0.5, 0.5)]
    # VinePPO keeps its own values at the states: no MC rollouts in the states call
    result, episodes, eng = _run_probe("vineppo")
    assert [s.n for _, s in eng.calls] == [4, 5, 6] and result.mc is None


def test_state_records_name_the_step_and_merge_across_processes(tmp_path):
    result, episodes, _ = _run_probe("vineppo")
    tok = OffsetCharTokenizer()
    write_probe_records(tmp_path, result, episodes, TASK, ROWS, tok, iteration=3, rank=1, algorithm="vineppo",
                        mc_rollouts=2)
    recs = read_records(tmp_path, "states")
    assert len(recs) == 3
    by_state = {(r["sample_index"], r["step"]): r for r in recs}
    # s1 of the first response: step 1 of 2, prefix "\nx = 1" (6 tokens), its own MC value 0.75 of 9 samples
    s1 = by_state[(0, 1)]
    assert (s1["prefix_tokens"], s1["num_steps"], s1["mc"], s1["mc_rollouts"]) == (6, 2, 0.75, 9)
    assert (s1["truth"], s1["truth_rollouts"], s1["iteration"], s1["rank"]) == (0.5, 4, 3, 1)
    assert s1["estimator"] == "mc" and s1["critic"] is None and s1["oracle"] is None
    assert by_state[(1, 1)]["mc"] == 0.0 and by_state[(1, 1)]["truth"] == 0.0
    assert by_state[(0, 0)]["step"] == 0 and by_state[(0, 0)]["prefix_tokens"] == 0
    alts = read_records(tmp_path, "alternatives")
    assert len(alts) == 1 and alts[0]["step"] == 1 and alts[0]["sample_index"] == 0
    assert alts[0]["steps"] == ["\ny = 2", "\ny = 3", "\ny = 9"] and alts[0]["mc_rollouts"] == 2


def test_read_records_merges_every_process_file_and_truncate_drops_later_iterations(tmp_path, caplog):
    def rec(it, rank, q, step):
        return {"iteration": it, "rank": rank, "question_index": q, "sample_index": 0, "step": step, "truth": 0.5}
    append_records(tmp_path, "states", 0, [rec(1, 0, 4, 0), rec(2, 0, 4, 1)])
    append_records(tmp_path, "states", 1, [rec(1, 1, 9, 0), rec(2, 1, 2, 0)])
    append_records(tmp_path, "states", 1, [{**rec(2, 1, 2, 0), "truth": 1.0}])  # redone after a crash: last wins
    with open(tmp_path / "probe" / "states.rank1.jsonl", "a") as f:
        f.write('{"iteration": 3, "ra')  # cut short by a crash
    recs = read_records(tmp_path, "states")
    assert [(r["iteration"], r["rank"], r["question_index"]) for r in recs] == [(1, 0, 4), (1, 1, 9), (2, 1, 2),
                                                                                 (2, 0, 4)]
    assert recs[2]["truth"] == 1.0
    assert "half-written" in caplog.text
    truncate_records(tmp_path, 1)
    assert [(r["iteration"], r["rank"]) for r in read_records(tmp_path, "states")] == [(1, 0), (1, 1)]
    truncate_records(tmp_path, 0)
    assert read_records(tmp_path, "states") == [] and read_records(tmp_path / "none", "alternatives") == []
    (tmp_path / "probe" / "states.rank0.jsonl").write_text('{"iteration": 1}\nnot json\n{"iteration": 2}\n')
    with pytest.raises(ValueError, match=r"states.rank0.jsonl, line 2"):
        read_records(tmp_path, "states")


def test_ranking_accuracy_is_over_every_process_pairs_not_a_mean_of_accuracies(monkeypatch):
    """Process 0 scores 1 of 1 pair, process 1 scores 1 of 3: the iteration's accuracy is 2/4."""
    import accelerate.utils

    from vineppo.loop import reduce_iteration_metrics

    local = [{"probe/mc_ranking_correct": 1, "probe/mc_ranking_pairs": 1, "probe/mc_abs_error": 0.2},
             {"probe/mc_ranking_correct": 1, "probe/mc_ranking_pairs": 3, "probe/mc_abs_error": 0.4}]

    class TwoProcesses:
        num_processes, device = 2, "cpu"

        def gather(self, t):
            keys = sorted(local[0])
            return torch.cat([t, torch.tensor([[float(local[1][k]) for k in keys]], dtype=t.dtype)])

    monkeypatch.setattr(accelerate.utils, "gather_object", lambda x: x + [sorted(local[1])])
    row = reduce_iteration_metrics(TwoProcesses(), dict(local[0]))
    assert row["probe/mc_ranking_pairs"] == 4 and row["probe/mc_ranking_correct"] == 2
    assert row["probe/mc_ranking_accuracy"] == pytest.approx(0.5)
    assert row["probe/mc_abs_error"] == pytest.approx(0.3)
    assert {"probe/critic_ranking_pairs", "probe/states"} <= SUMMED_METRICS


def test_iteration_metrics_score_each_estimator_of_the_algorithm():
    result, episodes, _ = _run_probe("ppo")
    result.ranked[0].critic = [0.3, 0.3, 0.3]  # a critic that cannot tell the steps apart
    for e in episodes:
        e.meta["critic_values"] = [0.3] * (len(e.response_ids) + 1)
    m = probe_iteration_metrics(result, episodes, "ppo")
    assert (m["probe/mc_ranking_correct"], m["probe/mc_ranking_pairs"]) == (2, 3)
    assert (m["probe/critic_ranking_correct"], m["probe/critic_ranking_pairs"]) == (0, 3)
    acc = ranking_accuracies(m)
    assert acc["probe/mc_ranking_accuracy"] == pytest.approx(2 / 3) and acc["probe/critic_ranking_accuracy"] == 0.0
    # |0.3 − 1/2| twice and |0.3 − 0| once
    assert m["probe/critic_abs_error"] == pytest.approx((0.2 + 0.2 + 0.3) / 3)
    assert "probe/critic_ranking_pairs" not in probe_iteration_metrics(result, episodes, "vineppo")
    no_pairs = ranking_accuracies({"probe/mc_ranking_correct": 0, "probe/mc_ranking_pairs": 0})
    assert math.isnan(no_pairs["probe/mc_ranking_accuracy"])  # nothing scored: no number, not 0 %


def test_no_ranking_when_turned_off_and_config_checks():
    result, _, eng = _run_probe("grpo", ProbeConfig(every=1, states=8, k=4, alternatives=0))
    assert len(eng.calls) == 1 and result.ranked == [] and result.stats["probe/ranked_states"] == 0
    cfg = load_config(None, ["model.name_or_path=x", "probe.every=2"])
    assert (cfg.probe.alternatives, cfg.probe.min_alternatives, cfg.probe.ranking_states) == (5, 3, 8)
    with pytest.raises(ConfigError, match="min_alternatives"):
        load_config(None, ["model.name_or_path=x", "probe.alternatives=4", "probe.min_alternatives=5"])
    with pytest.raises(ConfigError, match="min_alternatives"):
        load_config(None, ["model.name_or_path=x", "probe.min_alternatives=1"])


def test_arithmetic_oracle_value_is_one_while_every_written_line_is_right():
    task = get_task("arithmetic")
    row = {"question": "Mia has 12 shells. She finds 7, gives away 5. How many shells now?",
           "answer": "12+7=19\n19-5=14\n#### 14"}
    assert task.oracle_value(row, "") == 1.0
    assert task.oracle_value(row, "\n12+7=19") == 1.0
    assert task.oracle_value(row, "\n12+7=19\n19-5=14\n#### 14") == 1.0
    assert task.oracle_value(row, "\n12+7=18") == 0.0
    assert task.oracle_value(row, "\n12+7=19\n19-5=14\n#### 15") == 0.0
    assert task.oracle_value(row, "\n12+7=19\n19-5=14\n#### 14\n1+1=2") == 0.0
    assert TASK.oracle_value(ROWS[0], "\nx") is None  # GSM8K: no oracle


# ---- the critic's value at arbitrary states -------------------------------------------------------

def test_critic_state_values_are_the_values_the_trainer_reads_for_the_next_action(tiny_model_dir, one_torch_thread):
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    from vineppo.episodes import Episode
    from vineppo.tokens import encode_prompt
    from vineppo.trainer import Trainer

    cfg = load_config(None, [
        "algorithm=ppo", f"model.name_or_path={tiny_model_dir}", "model.dtype=float32",
        "model.gradient_checkpointing=false", "episodes.questions_per_iteration=1", "episodes.samples_per_question=2",
        "ppo.minibatch_size=2", "ppo.micro_batch_size=2", "ppo.epochs=1", "logging.progress=false", "seed=3"])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = Trainer(cfg, Accelerator(cpu=True), tok, progress=False)
    prompt = encode_prompt(tok, "[MATH_TASK] Problem:\nWhat is 2 + 2?\n\nSolution:")
    resp = tok("\n2 + 2 = 4\n#### 4", add_special_tokens=False)["input_ids"]
    eps = [Episode(question_index=0, sample_index=j, prompt_ids=prompt, response_ids=resp[: n], response_text="",
                   finished=False, truncated=False, reward=float(j), step_boundaries=[0, 1], token_starts=[0] * n)
           for j, n in enumerate([len(resp), 3])]
    # three states of different lengths in one right-padded micro-batch, then one alone
    seqs = [prompt + resp[:2], prompt, prompt + resp[:5]]
    values = trainer.critic_state_values(seqs)
    assert trainer.critic_state_values(seqs[1:2]) == pytest.approx(values[1:2], abs=1e-5)
    trainer.step(eps)  # caches V(s_t) per action token, with the weights before this update
    cached = eps[0].meta["critic_values"]
    assert values == pytest.approx([cached[2], cached[0], cached[5]], abs=1e-5)
    assert len(set(round(v, 6) for v in values)) == 3  # different states, different values


# ---- compare: the value plots and table ---------------------------------------------------------

def _probed(run, states, alternatives=(), episodes=()):
    for rank in (0, 1):
        append_records(run, "states", rank, [r for r in states if r["rank"] == rank])
        append_records(run, "alternatives", rank, [r for r in alternatives if r["rank"] == rank])
    if episodes:
        (run / "episodes").mkdir()
        (run / "episodes" / "iter_000001.rank0.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))


def _state(it, rank, step, truth, mc=None, critic=None):
    return {"iteration": it, "rank": rank, "question_index": step, "sample_index": rank, "step": step,
            "num_steps": 3, "truth": truth, "mc": mc, "critic": critic}


def test_mae_by_step_and_ranking_by_iteration_are_hand_computed():
    from vineppo.compare.values import mae_by_step, mean_abs_error, ranking_by_iteration

    states = [_state(1, 0, 0, 0.5, mc=0.25, critic=0.5), _state(1, 1, 0, 1.0, mc=1.0, critic=0.2),
              _state(2, 0, 1, 0.0, mc=0.5, critic=0.9), _state(2, 1, 2, 0.25, mc=0.25, critic=None)]
    # mc: step 0 → (0.25 + 0) / 2; step 1 → 0.5; step 2 → 0
    assert mae_by_step(states, "mc") == {0: (0.125, 2), 1: (0.5, 1), 2: (0.0, 1)}
    # critic: step 0 → (0 + 0.8) / 2; step 1 → 0.9; step 2 has no critic value
    assert mae_by_step(states, "critic") == {0: (pytest.approx(0.4), 2), 1: (pytest.approx(0.9), 1)}
    assert mean_abs_error(states, "critic") == (pytest.approx((0.0 + 0.8 + 0.9) / 3), 3)
    alts = [{"iteration": 1, "truth": [1.0, 0.5, 0.0], "mc": [1.0, 0.0, 0.0], "critic": [0.3, 0.3, 0.3]},
            {"iteration": 1, "truth": [0.0, 1.0], "mc": [0.0, 1.0], "critic": [0.6, 0.2]},
            {"iteration": 4, "truth": [0.5, 0.5], "mc": [0.0, 1.0], "critic": None}]
    assert ranking_by_iteration(alts, "mc") == {1: (3, 4), 4: (0, 1)}  # equal truth: scored, wrong
    assert ranking_by_iteration(alts, "critic") == {1: (0, 4)}


def test_compare_writes_the_value_plots_and_table_for_probed_runs(tmp_path, figures):
    from vineppo.compare import TABLE_FILE, VALUE_PLOT_FILES, compare

    ppo = make_run(tmp_path, "ppo", "ppo", 1.0, test={2: 0.3}, validation={2: 0.3}, iterations=2)
    vine = make_run(tmp_path, "vine", "vineppo", 1.0, test={2: 0.4}, validation={2: 0.4}, iterations=2)
    plain = make_run(tmp_path, "plain", "grpo", 1.0, test={2: 0.4}, validation={2: 0.4}, iterations=2)
    _probed(ppo, [_state(1, 0, 0, 0.5, mc=0.5, critic=0.1), _state(1, 1, 1, 1.0, mc=0.75, critic=0.2),
                  _state(2, 0, 1, 0.0, mc=0.25, critic=0.6)],
            [{"iteration": 1, "rank": 0, "question_index": 0, "sample_index": 0, "step": 0,
              "truth": [1.0, 0.0, 0.5], "mc": [1.0, 0.0, 0.5], "critic": [0.4, 0.4, 0.1]},
             {"iteration": 2, "rank": 1, "question_index": 1, "sample_index": 0, "step": 0,
              "truth": [1.0, 0.0], "mc": [0.0, 1.0], "critic": [0.9, 0.1]}],
            episodes=[{"reward": 1.0, "step_advantages": None, "critic_step_values": [0.5, 0.25]}])
    _probed(vine, [_state(1, 0, 0, 0.5, mc=0.5), _state(1, 1, 2, 0.5, mc=0.0)],
            episodes=[{"reward": 1.0, "step_advantages": [0.25, 0.5]}, {"reward": 0.0, "step_advantages": [-0.5]}])
    res = compare([ppo, vine, plain], tmp_path / "cmp", print_table=False)
    for key, name in VALUE_PLOT_FILES.items():
        assert res.plots[key].name == name and (tmp_path / "cmp" / name).read_bytes().startswith(PNG_MAGIC)
    # error by step: PPO critic step 0 → 0.4, step 1 → (0.8 + 0.6) / 2; VinePPO MC step 0 → 0, step 2 → 0.5
    lines = plotted(figures[VALUE_PLOT_FILES["value_error_by_step"]])
    assert lines["ppo (critic)"] == ([0, 1], pytest.approx([0.4, 0.7]))
    assert lines["ppo (MC estimate)"] == ([0, 1], pytest.approx([0.0, 0.25]))
    assert lines["vine (MC estimate)"] == ([0, 2], pytest.approx([0.0, 0.5]))
    # ranking per iteration (%): critic 1 of 3 at 1 (0.4 = 0.4 tie wrong), 1 of 1 at 2; MC 3/3, 0/1
    lines = plotted(figures[VALUE_PLOT_FILES["ranking_accuracy_vs_iteration"]])
    assert lines["ppo (critic)"] == ([1, 2], pytest.approx([100 / 3, 100.0]))
    assert lines["ppo (MC estimate)"] == ([1, 2], pytest.approx([100.0, 0.0]))
    assert lines["chance (50 %)"][1] == [50.0, 50.0]
    # one 2-D histogram per (run, estimator) with data, counting every state
    hist = figures[VALUE_PLOT_FILES["value_estimate_vs_truth"]]
    panels = [ax for ax in hist.axes if ax.get_title()]
    titles = [ax.get_title() for ax in panels if ax.collections]
    assert len(titles) == 3 and any(t.startswith("ppo: critic") for t in titles)
    counts = [float(np.nansum(np.ma.filled(ax.collections[0].get_array(), np.nan))) for ax in panels
              if ax.collections]
    assert counts == [3.0, 3.0, 2.0]
    # step advantages: PPO from its critic, A = [0.25 − 0.5, 1 − 0.25]; VinePPO's as dumped
    adv = figures[VALUE_PLOT_FILES["step_advantages"]].axes[0]
    assert sorted(p.get_label() for p in adv.patches) == ["ppo (2 steps)", "vineppo (3 steps)"]
    md = (tmp_path / "cmp" / TABLE_FILE).read_text()
    assert "## Value estimates (value probe)" in md
    assert "| ppo | ppo | critic | 3 | 0.600 | 2 | 4 | 50.0 % |" in md
    assert "| vine | vineppo | MC estimate | 2 | 0.250 | 0 | 0 | — |" in md
    assert "| plain |" not in md.split("## Value estimates")[1]
    # a run without records or dumps compares as before: none of these plots, no section
    res = compare([plain], tmp_path / "cmp_plain", print_table=False)
    assert not set(res.plots) & set(VALUE_PLOT_FILES) and "Value estimates" not in res.markdown_path.read_text()
    assert not any((tmp_path / "cmp_plain" / name).exists() for name in VALUE_PLOT_FILES.values())
    # ranked states whose alternatives all have the same truth: every pair is scored and wrong (as the
    # official analyzer scores them), so the run's point sits at 0 %
    _probed(plain, [_state(1, 0, 0, 0.5, mc=0.5)], [{"iteration": 1, "rank": 0, "question_index": 0,
                                                     "sample_index": 0, "step": 0, "truth": [1.0, 1.0, 1.0],
                                                     "mc": [1.0, 0.5, 1.0]}])
    res = compare([plain], tmp_path / "cmp_ties", print_table=False)
    fig = figures[VALUE_PLOT_FILES["ranking_accuracy_vs_iteration"]]
    assert "ranking_accuracy_vs_iteration" in res.plots and not fig.axes[0].texts
    assert plotted(fig)["plain (MC estimate)"] == ([1], pytest.approx([0.0]))


def test_step_advantages_of_a_ppo_episode_come_from_its_critic_values():
    from vineppo.compare.values import step_advantages_of

    assert step_advantages_of({"reward": 1.0, "step_advantages": None, "critic_step_values": [0.5, 0.25]}) == \
        pytest.approx([-0.25, 0.75])
    assert step_advantages_of({"reward": 0.0, "step_advantages": [0.1, -0.1]}) == [0.1, -0.1]
    assert step_advantages_of({"reward": 1.0}) == []
