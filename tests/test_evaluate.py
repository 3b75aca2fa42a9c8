"""Evaluation: pass@k / maj@k against hand-computed cases, evaluate_model semantics with a scripted
engine, real-row evaluation of a tiny checkpoint (GSM8K and MATH-500), run sweeps that skip
evaluated checkpoints."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from vineppo.checkpoint import write_manifest
from vineppo.config import EngineConfig
from vineppo.engine.base import Completion, Engine
from vineppo.evaluate import (EvalError, evaluate_checkpoint, evaluate_model, evaluate_run, majority_answer,
                              majority_vote, pass_at_k, summarize, vote_key)
from vineppo.tasks import get_task

HF = EngineConfig(backend="hf", max_batch_size=16)
FAST = dict(n_samples=2, max_new_tokens=6, max_problems=2, progress=False)


# ----------------------------------------------------------------------------- estimators


@pytest.mark.parametrize("n, c, k, expected", [
    (16, 0, 1, 0.0),
    (16, 16, 16, 1.0),
    (4, 1, 1, 0.25),            # c / n
    (4, 1, 2, 0.5),             # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (4, 2, 2, 5 / 6),           # 1 - C(2,2)/C(4,2) = 1 - 1/6
    (5, 2, 3, 0.9),             # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (10, 3, 5, 11 / 12),        # 1 - C(7,5)/C(10,5) = 1 - 21/252
    (3, 1, 3, 1.0),             # n - c < k: every 3-subset holds the correct one
    (16, 1, 16, 1.0),
    (16, 3, 1, 3 / 16),
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_bad_input(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_majority_vote_hand_computed():
    assert majority_vote(["5", "7", "5"], [True, False, True]) is True
    assert majority_vote(["7", "5", "7", "5"], [False, True, False, True]) is False  # tie: "7" came first
    assert majority_vote(["5", "7", "7", "5"], [True, False, False, True]) is True   # tie: "5" came first
    assert majority_vote([None, None, "3"], [False, False, True]) is True            # None does not vote
    assert majority_vote([None, None], [False, False]) is False                     # no answer at all
    assert majority_vote(["2", "2", "9"], [False, False, True]) is False
    assert majority_answer(["a", "b", "b", "a", "c"]) == 0
    assert majority_answer(["c", "b", "b", "a"]) == 1
    assert majority_answer([None]) is None
    with pytest.raises(ValueError, match="1 answers but 2 verdicts"):
        majority_vote(["1"], [True, False])


def test_vote_key():
    gsm8k, math = get_task("gsm8k"), get_task("math")
    assert vote_key(gsm8k, "1,000") == vote_key(gsm8k, "1000.0") == vote_key(gsm8k, " 1000 ") == "1000"
    assert vote_key(gsm8k, "18 apples") == "18 apples"
    assert vote_key(gsm8k, "") is None and vote_key(gsm8k, None) is None
    assert vote_key(math, "1,2") == "1,2"  # commas matter in MATH answers
    assert vote_key(math, "\\frac{1}{2}") == "\\frac{1}{2}"


def test_summarize_hand_computed():
    gsm8k = get_task("gsm8k")

    def rec(p, j, ans, ok, finish="stop"):
        return {"problem_index": p, "sample_index": j, "extracted_answer": ans, "correct": ok,
                "finish_reason": finish, "truncated": False, "tokens": 10 * (j + 1)}

    records = [rec(0, 0, "5", True), rec(0, 1, "6", False), rec(0, 2, "5", True), rec(0, 3, "6", False),
               rec(1, 0, "1", False), rec(1, 1, "1", False), rec(1, 2, "2", False), rec(1, 3, "3", True)]
    s = summarize(gsm8k, records, 4)
    assert s["pass@1"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert s["pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert s["pass@4"] == 1.0
    assert s["maj@4"] == 0.5  # problem 0: tie 5/6, "5" first -> right; problem 1: "1" wins -> wrong
    assert s["num_problems"] == 2 and s["num_samples"] == 8 and s["num_correct"] == 3
    assert s["mean_response_tokens"] == 25.0


def test_summarize_votes_by_the_tasks_key():
    """maj@k compares answers by vote_key of the task: in GSM8K's format "18" and "18.0" are one
    answer (2 votes beat "7"); compared as raw strings all three tie and the first, "7", would win."""
    def rec(j, ans, ok):
        return {"problem_index": 0, "sample_index": j, "extracted_answer": ans, "correct": ok,
                "finish_reason": "stop", "truncated": False, "tokens": 4}

    records = [rec(0, "7", False), rec(1, "18", True), rec(2, "18.0", True)]
    assert summarize(get_task("gsm8k"), records, 3)["maj@3"] == 1.0
    assert summarize(get_task("math"), records, 3)["maj@3"] == 0.0  # MATH compares strings


# ----------------------------------------------------------------------------- evaluate_model, scripted


class ScriptedEngine(Engine):
    """Returns fixed completions per prompt (in call order), recording the sampling params."""

    def __init__(self, script: list[list[Completion]]):
        self.script = script
        self.calls = []

    def generate(self, prompts, sampling, desc=None):
        self.calls.append((len(prompts), sampling))
        out = [self.script.pop(0) for _ in prompts]
        assert all(len(c) == sampling.n for c in out)
        return out

    def update_weights(self, state_dict):
        raise NotImplementedError


def _two_problem_script() -> tuple[list[dict], ScriptedEngine]:
    rows = [{"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"},
            {"question": "What is 10 * 100?", "answer": "10 * 100 = 1000\n#### 1,000"}]
    engine = ScriptedEngine([
        [Completion([1, 2], "2+3=5\n#### 5", "stop"), Completion([1, 2, 3], "#### 5", "length"),
         Completion([1], "#### 4", "stop")],
        [Completion([1], "#### 1000", "stop"), Completion([1, 2], "#### 1,000.0", "stop"),
         Completion([1], "#### 1000 and more", "length")],
    ])
    return rows, engine


def test_evaluate_model_grades_unfinished_samples_by_default(tiny_tokenizer):
    """The official evaluation grades every sample's text, also those cut by max_tokens."""
    rows, engine = _two_problem_script()
    summary, records = evaluate_model(engine, tiny_tokenizer, get_task("gsm8k"), rows, n_samples=3,
                                      max_new_tokens=7, seed=5, progress=False)
    # sample 1 stopped by length and is right; "1,000.0" is wrong under the official exact match
    assert [r["correct"] for r in records] == [True, True, False, True, False, False]
    assert all(r["graded"] for r in records)
    assert records[1]["extracted_answer"] == "5" and records[1]["finish_reason"] == "length"
    assert records[0]["gold_answer"] == "5"
    assert summary["pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert summary["maj@3"] == 1.0 and summary["pass@3"] == 1.0  # "5" twice; "1000" (= 1000.0) leads
    assert summary["finished_frac"] == pytest.approx(4 / 6) and summary["num_samples"] == 6
    n, params = engine.calls[0]
    assert n == 2 and params.n == 3 and params.temperature == 0.35 and params.top_p == 0.9
    assert params.max_new_tokens == 7 and params.seed == 5 and params.stop == ("\n\n\nProblem:",)


def test_evaluate_model_unfinished_wrong_keeps_the_training_rule(tiny_tokenizer):
    rows, engine = _two_problem_script()
    summary, records = evaluate_model(engine, tiny_tokenizer, get_task("gsm8k"), rows, n_samples=3,
                                      max_new_tokens=7, seed=5, progress=False, unfinished="wrong")
    assert [r["correct"] for r in records] == [True, False, False, True, False, False]
    assert [r["graded"] for r in records] == [True, False, True, True, True, False]
    assert summary["pass@1"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    # problem 0: the unfinished "5" does not vote -> "5" (sample 0) and "4" tie, "5" first -> right
    assert summary["maj@3"] == 1.0
    with pytest.raises(EvalError, match="unfinished"):
        evaluate_model(engine, tiny_tokenizer, get_task("gsm8k"), rows, unfinished="skip", progress=False)


def test_evaluate_model_uses_the_tasks_grading_mode(tiny_tokenizer):
    rows, engine = _two_problem_script()
    summary, records = evaluate_model(engine, tiny_tokenizer, get_task("gsm8k", grading_mode="math_verify"), rows,
                                      n_samples=3, max_new_tokens=7, seed=5, progress=False)
    # math-verify compares numbers: "1,000.0" is right; "1000 and more" reads as 1000 too
    assert [r["correct"] for r in records] == [True, True, False, True, True, True]


def test_evaluate_model_context_budget(tiny_tokenizer):
    """max_sequence_length caps max_new_tokens per prompt; over-long samples are truncated (graded by
    default, wrong with unfinished="wrong")."""
    from vineppo.tokens import encode_prompt

    task = get_task("gsm8k")
    rows = [{"question": "What is 2 + 3?", "answer": "#### 5"}]
    plen = len(encode_prompt(tiny_tokenizer, task.prompt(rows[0])))
    engine = ScriptedEngine([[Completion([7] * 4, "#### 5", "stop"), Completion([7] * 2, "#### 5", "stop")]])
    summary, records = evaluate_model(engine, tiny_tokenizer, task, rows, n_samples=2, max_new_tokens=100,
                                      max_sequence_length=plen + 4, progress=False, unfinished="wrong")
    assert engine.calls[0][1].max_new_tokens == 4
    assert [r["truncated"] for r in records] == [True, False]  # 4 tokens + EOS do not fit
    assert [r["correct"] for r in records] == [False, True]
    assert summary["truncated_frac"] == 0.5
    engine = ScriptedEngine([[Completion([7] * 4, "#### 5", "stop"), Completion([7] * 2, "#### 5", "stop")]])
    summary, records = evaluate_model(engine, tiny_tokenizer, task, rows, n_samples=2, max_new_tokens=100,
                                      max_sequence_length=plen + 4, progress=False)
    assert [r["correct"] for r in records] == [True, True]


# ----------------------------------------------------------------------------- real rows, tiny checkpoint


@pytest.mark.parametrize("task_name", ["gsm8k", "math"])
def test_evaluate_checkpoint_writes_files(tiny_model_dir, shared_data_dir, tmp_path, task_name, one_torch_thread):
    ckpt = tmp_path / "model"
    shutil.copytree(tiny_model_dir, ckpt)
    res = evaluate_checkpoint(ckpt, task_name, "test", data_source=str(shared_data_dir / task_name),
                              engine_cfg=HF, n_samples=3, max_new_tokens=8, max_problems=3, progress=False)
    out = ckpt / "eval" / "test"
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == res
    for key in ("pass@1", "pass@2", "pass@3", "maj@3", "mean_response_tokens", "num_problems", "num_samples",
                "finished_frac"):
        assert key in res, key
    assert res["num_problems"] == 3 and res["num_samples"] == 9
    assert res["task"] == task_name and res["split"] == "test" and res["engine"] == "hf"
    assert res["n_samples"] == 3 and res["temperature"] == 0.35 and res["seed"] == 42
    assert res["grading"] == "official" and res["unfinished"] == "grade"
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 9
    first = json.loads(lines[0])
    assert set(first) >= {"problem_index", "sample_index", "response", "extracted_answer", "correct",
                          "finish_reason", "tokens"}
    # the metrics are those of the samples written beside them
    samples = [json.loads(l) for l in lines]
    assert res["pass@1"] == pytest.approx(sum(r["correct"] for r in samples) / 9)
    any_right = [any(r["correct"] for r in samples if r["problem_index"] == q) for q in range(3)]
    assert res["pass@3"] == pytest.approx(sum(any_right) / 3)
    assert res["pass@1"] <= res["pass@2"] <= res["pass@3"] and res["maj@3"] <= res["pass@3"]
    assert res["mean_response_tokens"] == pytest.approx(sum(r["tokens"] for r in samples) / 9)
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporary files


def _fake_run(root: Path, tiny_model_dir: Path, data_dir: Path, iterations: list[int],
              save_every: int | None = None) -> Path:
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(
        "algorithm: vineppo\n" + (f"save_every: {save_every}\n" if save_every else "")
        + f"model:\n  name_or_path: {tiny_model_dir}\n"
        f"data:\n  task: gsm8k\n  source: {data_dir}\n  validation_size: 20\n  validation_seed: 42\n"
        "engine:\n  backend: hf\n  max_batch_size: 16\n")
    for it in iterations:
        d = run / "checkpoints" / f"iter_{it:06d}"
        shutil.copytree(tiny_model_dir, d)
        write_manifest(d, it)
    return run


def test_evaluate_run_skips_evaluated(tiny_model_dir, shared_data_dir, tmp_path, caplog, one_torch_thread):
    run = _fake_run(tmp_path, tiny_model_dir, shared_data_dir / "gsm8k", [10, 20])
    broken = run / "checkpoints" / "iter_000030"
    shutil.copytree(tiny_model_dir, broken)  # no MANIFEST.json: half-written, never evaluated

    with caplog.at_level(logging.INFO, logger="vineppo.evaluate"):
        first = evaluate_run(run, split=["validation", "test"], **FAST)
    assert "rebuilding the engine" not in caplog.text  # one engine; later weights pushed in place
    assert sorted((r["iteration"], r["split"]) for r in first) == [
        (10, "test"), (10, "validation"), (20, "test"), (20, "validation")]
    assert "iter_000030" in caplog.text
    assert not (broken / "eval").exists()
    stamp = (run / "checkpoints" / "iter_000010" / "eval" / "test" / "results.json").stat().st_mtime_ns

    assert evaluate_run(run, split=["validation", "test"], **FAST) == []  # everything already evaluated
    assert (run / "checkpoints" / "iter_000010" / "eval" / "test" / "results.json").stat().st_mtime_ns == stamp

    write_manifest(broken, 30)  # the checkpoint is now complete: only it is evaluated
    third = evaluate_run(run, split="test", **FAST)
    assert [(r["iteration"], r["split"]) for r in third] == [(30, "test")]

    forced = evaluate_run(run, split="test", force=True, include_initial=True, **FAST)
    assert [r["iteration"] for r in forced] == [0, 10, 20, 30]
    assert (run / "initial" / "eval" / "test" / "results.json").is_file()


def test_eval_cli_run_and_checkpoint(tiny_model_dir, shared_data_dir, tmp_path, capsys, one_torch_thread):
    from vineppo.cli import main

    run = _fake_run(tmp_path, tiny_model_dir, shared_data_dir / "gsm8k", [5])
    args = ["--n-samples", "2", "--max-new-tokens", "4", "--max-problems", "2", "--backend", "hf"]
    assert main(["eval", "--run", str(run), *args]) == 0
    assert (run / "checkpoints" / "iter_000005" / "eval" / "test" / "results.json").is_file()
    assert main(["eval", "--run", str(run), *args]) == 0
    assert "evaluated 0" in capsys.readouterr().out
    # a single checkpoint inside a run: task and data source come from the run's config.yaml
    out = tmp_path / "elsewhere"
    ckpt = run / "checkpoints" / "iter_000005"
    assert main(["eval", "--checkpoint", str(ckpt), "--split", "validation", "--output-dir", str(out), *args]) == 0
    res = json.loads((out / "validation" / "results.json").read_text())
    assert res["task"] == "gsm8k" and res["iteration"] == 5 and res["num_problems"] == 2
    assert res["grading"] == "official" and res["unfinished"] == "grade"
    # --grading / --unfinished reach the results; the run's grading.mode is the default
    assert main(["eval", "--checkpoint", str(ckpt), "--split", "validation", "--output-dir", str(out), *args,
                 "--grading", "math_verify", "--unfinished", "wrong"]) == 0
    res = json.loads((out / "validation" / "results.json").read_text())
    assert res["grading"] == "math_verify" and res["unfinished"] == "wrong"
    with (run / "config.yaml").open("a") as f:
        f.write("grading:\n  mode: math_verify\n")
    assert main(["eval", "--checkpoint", str(ckpt), "--split", "validation", "--output-dir", str(out), *args]) == 0
    assert json.loads((out / "validation" / "results.json").read_text())["grading"] == "math_verify"
    assert main(["eval", "--checkpoint", str(tmp_path / "missing"), "--task", "gsm8k", *args]) == 2


@pytest.mark.vllm
def test_evaluate_run_with_vllm_matches_transformers(tiny_model_dir, shared_data_dir, tmp_path):
    """One vLLM engine serves both checkpoints (the second one's weights pushed in place); greedy
    float32 responses equal the transformers backend's."""
    import torch
    from transformers import AutoModelForCausalLM

    run = _fake_run(tmp_path, tiny_model_dir, shared_data_dir / "gsm8k", [1, 2])
    second = run / "checkpoints" / "iter_000002"
    model = AutoModelForCausalLM.from_pretrained(second)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    model.save_pretrained(second)
    (second / "MANIFEST.json").unlink()  # re-list the changed files (a manifest would list itself)
    write_manifest(second, 2)
    greedy = dict(n_samples=1, temperature=0.0, max_new_tokens=12, max_problems=3, progress=False)

    def responses() -> dict[int, list[str]]:
        return {it: [json.loads(line)["response"] for line in
                     (run / "checkpoints" / f"iter_{it:06d}" / "eval" / "test" / "samples.jsonl").open()]
                for it in (1, 2)}

    vllm_cfg = EngineConfig(backend="vllm", dtype="float32", kv_cache_memory_bytes=256 * 2**20)
    done = evaluate_run(run, split="test", engine_cfg=vllm_cfg, **greedy)
    assert [r["engine"] for r in done] == ["vllm", "vllm"]
    from_vllm = responses()
    evaluate_run(run, split="test", engine_cfg=HF, force=True, **greedy)
    assert responses() == from_vllm
    assert from_vllm[1] != from_vllm[2]  # the checkpoints really differ
