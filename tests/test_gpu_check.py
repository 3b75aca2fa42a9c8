"""benchmarks/gpu_check.py's parts that need no GPU: the agreement test (tolerance and control),
the runner (one process per check, logs, the deadline, exit statuses), the run table and its
validation, the verification of a training run, the comparison with the plan, the wheels, and
the no-CUDA exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gpucheck import runner  # noqa: E402
from benchmarks.gpucheck.agreement import (MAX_LOGPROB_GAP, engine_gap, judge_agreement, logprob_gap,  # noqa: E402
                                           teacher_forced_logprobs)
from benchmarks.gpucheck.runner import Check, Result, exit_status, run_checks, summary  # noqa: E402
from benchmarks.gpucheck.table import (TABLE, EngineCheck, PerfCheck, TableError, TrainRun, child_check,  # noqa: E402
                                       select, tier_of, train_overrides, validate_table)

PY = sys.executable


# ---- the agreement test --------------------------------------------------------------------------
def test_logprob_gap_by_hand():
    # sequence 1: |0 - 0.1| = 0.1, |-1 - -1.3| = 0.3 -> 0.2; sequence 2: 0 -> mean 0.1; empty skipped
    assert logprob_gap([[0.0, -1.0], [-2.0], []], [[0.1, -1.3], [-2.0], []]) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        logprob_gap([[]], [[]])
    with pytest.raises(ValueError):  # sequences must pair up
        logprob_gap([[0.0]], [[0.0], [1.0]])


def test_judge_needs_agreement_and_a_disagreeing_control():
    tol = MAX_LOGPROB_GAP
    assert judge_agreement(0.2 * tol, 10 * tol)[0] is True
    ok, detail = judge_agreement(1.5 * tol, 10 * tol)
    assert not ok and "does not hold the pushed weights" in detail
    ok, detail = judge_agreement(0.2 * tol, 0.5 * tol)
    assert not ok and "control agrees too" in detail
    assert judge_agreement(float("nan"), 10 * tol)[0] is False
    assert judge_agreement(tol, 10 * tol)[0] is True  # the bound itself passes
    assert judge_agreement(0.2 * tol, tol)[0] is False  # a control at the bound agrees
    assert judge_agreement(0.01, 0.02, tolerance=0.015)[0] is True


def test_tolerance_passes_bf16_noise_and_fails_unpushed_weights(tiny_hf_model, tiny_tokenizer):
    """On the tiny model's own logits: bf16 rounding of every logit, and twice that as Gaussian
    relative noise (2^-8), stay within the tolerance; the logits of weights that were not pushed
    (the same model moved by an update-sized change) do not."""
    import copy

    texts = ["Tom has 3 apples. He buys 4 more. 3+4=7 #### 7", "Mia has 12 shells. She finds 7, gives away 5."]
    ids = torch.tensor([tiny_tokenizer(t)["input_ids"][:16] for t in texts])
    labels = ids[:, 1:]
    with torch.no_grad():
        logits = tiny_hf_model(ids).logits[:, :-1].float()
        moved = copy.deepcopy(tiny_hf_model)
        g = torch.Generator().manual_seed(0)
        for p in moved.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
        other = moved(ids).logits[:, :-1].float()

    def lps(x):
        return torch.log_softmax(x / 0.6, -1).gather(-1, labels[..., None])[..., 0].tolist()

    bf16 = logits.to(torch.bfloat16).float()
    noisy = logits * (1 + 2**-8 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(1)))
    gap_bf16, gap_noise, gap_other = (logprob_gap(lps(x), lps(logits)) for x in (bf16, noisy, other))
    assert 0 < gap_bf16 <= MAX_LOGPROB_GAP and 0 < gap_noise <= MAX_LOGPROB_GAP
    assert gap_other > 3 * MAX_LOGPROB_GAP
    assert judge_agreement(gap_noise, gap_other)[0] is True
    assert judge_agreement(gap_other, gap_other)[0] is False  # the unpushed engine fails the check


def test_teacher_forced_logprobs_match_a_plain_forward(tiny_hf_model):
    """Right-padded batches give each response token log_softmax(logits / T) of an unpadded forward."""
    prompts, responses = [[1, 5, 9], [1, 7]], [[12, 13, 14, 15], [20]]
    got = teacher_forced_logprobs(tiny_hf_model, prompts, responses, 0.6)
    for p, r, lp in zip(prompts, responses, got):
        ids = torch.tensor([p + r])
        with torch.no_grad():
            ref = torch.log_softmax(tiny_hf_model(ids).logits[0].float() / 0.6, -1)
        want = [ref[len(p) - 1 + i, t].item() for i, t in enumerate(r)]
        assert lp == pytest.approx(want, abs=1e-5)


@pytest.mark.slow
def test_bf16_engine_agrees_after_a_streamed_push_and_not_before(tiny_hf_model, tiny_tokenizer):
    """The check's own test on a real engine (transformers backend, bf16, CPU): against a moved
    fp32 policy the unpushed engine disagrees (control), after the streamed push it agrees."""
    import copy

    from vineppo.config import EngineConfig
    from vineppo.engine.factory import make_engine

    engine = make_engine(EngineConfig(backend="hf", dtype="bfloat16"), model_path="", tokenizer=tiny_tokenizer,
                         model=tiny_hf_model, progress=False)
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    prompts = [tiny_tokenizer(t)["input_ids"] for t in ("Tom has 3 apples.", "Mia has 12 shells. She finds 7,",
                                                        "Ann buys 4 pens", "Sam has 20 coins")]
    same, _ = engine_gap(engine, tiny_hf_model, prompts)
    assert same <= MAX_LOGPROB_GAP  # bf16 engine vs fp32 model, same weights
    moved = copy.deepcopy(tiny_hf_model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    control, _ = engine_gap(engine, moved, prompts)
    engine.update_weights((k, v) for k, v in moved.state_dict().items())  # streamed
    gap, tokens = engine_gap(engine, moved, prompts)
    assert tokens > 0
    ok, detail = judge_agreement(gap, control)
    assert ok, detail
    assert control > 2 * MAX_LOGPROB_GAP


# ---- the runner ----------------------------------------------------------------------------------
def _py(code: str) -> tuple[str, ...]:
    return (PY, "-c", code)


def _writer(name: str, body: str = "t0 = time.time()", status: str = "pass") -> str:
    """A check's process: runs `body`, then writes its verdict as benchmarks.gpucheck.runner does."""
    return (f"import os, sys, time, json; sys.path.insert(0, {str(ROOT)!r})\n"
            f"from benchmarks.gpucheck.runner import write_result\n{body}\n"
            f"write_result(__import__('pathlib').Path(sys.argv[1]) / 'results' / '{name}.json', '{status}', "
            f"'done', {{'pid': os.getpid(), 't0': t0, 't1': time.time()}})")


def _check(name, workdir, body="t0 = time.time()", status="pass", **kw) -> Check:
    return Check(name, (PY, "-c", _writer(name, body, status), str(workdir)), **kw)


def test_each_check_runs_in_a_process_of_its_own_with_its_full_log(tmp_path):
    body = "t0 = time.time(); print('stdout line'); print('stderr line', file=sys.stderr); time.sleep(0.3)"
    checks = [_check(n, tmp_path, body) for n in ("a", "b", "c")]
    lines = []
    results = run_checks(checks, tmp_path, time.monotonic() + 60, jobs=3, report=lambda r: lines.append(r))
    assert [r.status for r in results] == ["pass"] * 3
    pids = {r.measures["pid"] for r in results}
    assert len(pids) == 3 and os.getpid() not in pids
    for r in results:
        assert set(Path(r.log).read_text().splitlines()) == {"stdout line", "stderr line"}
    # three at once: they overlapped in time
    spans = sorted((r.measures["t0"], r.measures["t1"]) for r in results)
    assert spans[1][0] < spans[0][1]
    assert len(lines) == 3


def test_every_engine_check_gets_its_own_process_and_vllm_ones_run_alone(tmp_path):
    checks = [child_check(s, tmp_path / "w", tmp_path / "i") for s in TABLE]
    for spec, c in zip(TABLE, checks):
        assert c.argv[1].endswith("gpu_check.py") and c.argv[2:4] == ("--child", spec.name)
        if spec.backend == "vllm" or isinstance(spec, PerfCheck):
            assert c.exclusive
    assert len({c.argv for c in checks}) == len(checks)
    engine_checks = [s for s in TABLE if isinstance(s, EngineCheck)]
    assert {s.backend for s in engine_checks} == {"hf", "vllm"}


def test_an_exclusive_check_never_overlaps(tmp_path):
    body = "t0 = time.time(); time.sleep(0.4)"
    checks = [_check("a", tmp_path, body), _check("b", tmp_path, body), _check("x", tmp_path, body, exclusive=True),
              _check("c", tmp_path, body)]
    results = {r.name: r.measures for r in run_checks(checks, tmp_path, time.monotonic() + 60, jobs=4)}
    x = results["x"]
    for other in ("a", "b", "c"):
        o = results[other]
        assert o["t1"] <= x["t0"] or o["t0"] >= x["t1"], f"{other} overlapped the exclusive check"
    assert results["a"]["t0"] < results["b"]["t1"]  # the others did run side by side


def test_the_deadline_stops_what_runs_and_reports_the_rest_not_run(tmp_path):
    marker = tmp_path / "grandchild_survived"
    grandchild = tmp_path / "grandchild.py"
    grandchild.write_text(f"import time\ntime.sleep(4)\nopen({str(marker)!r}, 'w').write('x')\n")
    # the slow check starts a grandchild that would write a file after 4 s: the whole group is stopped
    slow = f"import subprocess; t0 = time.time(); subprocess.Popen([sys.executable, {str(grandchild)!r}]); time.sleep(60)"
    checks = [_check("fast", tmp_path), _check("slow", tmp_path, slow), _check("later", tmp_path)]
    t0 = time.monotonic()
    lines = []
    results = run_checks(checks, tmp_path, t0 + 3, jobs=1, report=lambda r: lines.append(runner.format_result(r)))
    assert time.monotonic() - t0 < 20
    assert [r.status for r in results] == ["pass", "not run", "not run"]
    assert "stopped at the deadline" in results[1].detail
    assert "before it started" in results[2].detail
    assert lines[1].startswith("NOT RUN slow: ") and lines[2].startswith("NOT RUN later: ")
    assert summary(results) == "gpu_check: 1 passed, 0 failed, 2 not run"
    assert exit_status(results) == runner.EXIT_NOT_RUN
    time.sleep(5)
    assert not marker.exists(), "the stopped check's grandchild ran on"


def test_a_check_waits_for_the_one_it_comes_after(tmp_path):
    body = "t0 = time.time(); time.sleep(0.5)"
    checks = [_check("needs", tmp_path, after=("base",)), _check("base", tmp_path, body),
              _check("free", tmp_path), _check("bad", tmp_path, status="fail"),
              _check("orphan", tmp_path, after=("bad",))]
    results = {r.name: r for r in run_checks(checks, tmp_path, time.monotonic() + 60, jobs=4)}
    assert results["needs"].measures["t0"] >= results["base"].measures["t1"]
    assert results["free"].measures["t0"] < results["base"].measures["t1"]  # it did not wait
    assert results["orphan"].status == "not run" and "needs bad" in results["orphan"].detail
    with pytest.raises(ValueError, match="not in the table"):
        run_checks([_check("x", tmp_path, after=("nope",))], tmp_path, time.monotonic() + 60)


def test_training_checks_wait_for_the_inputs():
    from benchmarks.gpucheck.table import INPUTS, inputs_check, with_inputs

    checks = [child_check(s, Path("w"), Path("i")) for s in select(TABLE, ("base",), quick=True)]
    checks = with_inputs(checks, inputs_check(Path("w"), Path("i"), 600))
    assert [c.name for c in checks] == ["memory_speed_0.5B", "push_streamed", INPUTS, "single_vineppo"]
    assert [c.after for c in checks] == [(), (), (), (INPUTS,)]
    assert "--prepare" in checks[2].argv and "600" in checks[2].argv
    only_engine = [child_check(by, Path("w"), Path("i")) for by in select(TABLE, ("base",), names=["push_streamed"])]
    assert with_inputs(only_engine, inputs_check(Path("w"), Path("i"), 600)) == only_engine


def test_an_interrupted_run_leaves_no_check_running(tmp_path):
    pid_file = tmp_path / "pid"
    slow = f"t0 = time.time(); open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    checks = [_check("slow", tmp_path, slow), _check("fast", tmp_path, "t0 = time.time(); time.sleep(1)")]

    def interrupt(r):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_checks(checks, tmp_path, time.monotonic() + 60, jobs=2, report=interrupt)
    pid = int(pid_file.read_text())
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_verdicts_and_exit_statuses(tmp_path):
    checks = [_check("ok", tmp_path), _check("bad", tmp_path, status="fail"), _check("skip", tmp_path, status="skip"),
              Check("crash", _py("import sys; print('Traceback...'); print('ValueError: boom'); sys.exit(3)")),
              Check("hang", _py("import time; time.sleep(60)"), timeout=1.0),
              Check("lies", (PY, "-c", _writer("lies") + "\nsys.exit(1)", str(tmp_path)))]
    results = run_checks(checks, tmp_path, time.monotonic() + 60, jobs=2)
    by = {r.name: r for r in results}
    assert [by[n].status for n in ("ok", "bad", "skip", "crash", "hang", "lies")] == \
        ["pass", "fail", "skip", "fail", "fail", "fail"]
    assert "exit 3" in by["crash"].detail and "ValueError: boom" in by["crash"].detail
    assert "timed out after" in by["hang"].detail
    assert "exit 1 after reporting" in by["lies"].detail
    assert summary(results) == "gpu_check: 1 passed, 4 failed"
    assert exit_status(results) == runner.EXIT_FAILED
    assert exit_status([Result("a", "pass", ""), Result("b", "skip", "")]) == runner.EXIT_OK
    assert runner.format_result(by["ok"]).startswith("PASS ok (")


def test_log_tail_names_the_cause_not_the_launcher(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("loading\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                   "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
                   "[rank0]: more noise\ntorch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
                   "subprocess.CalledProcessError: Command '['python']' returned non-zero exit status 1.\n")
    assert runner.log_tail(log) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    log.write_text("all fine\nlast words\n\n")
    assert runner.log_tail(log) == "last words"
    assert runner.log_tail(tmp_path / "missing.log") == "no log"


def test_results_json_holds_every_check_and_its_measures(tmp_path):
    results = [Result("a", "pass", "fine", 1.0, "/x/a.log", {"gap": 0.001}), Result("b", "not run", "deadline")]
    data = runner.results_json(results, tier="base", device="H100")
    assert data["tier"] == "base" and data["summary"] == "gpu_check: 1 passed, 0 failed, 1 not run"
    assert [c["name"] for c in data["checks"]] == ["a", "b"] and data["measures"] == {"a": {"gap": 0.001}}
    json.dumps(data)


# ---- the run table ---------------------------------------------------------------------------------
def test_the_table_validates():
    assert validate_table() == len(TABLE)


@pytest.mark.parametrize("bad,words", [
    (TrainRun("bad_key", "grpo", "single_gpu.yaml", ("ppo.no_such_key=1",)), ["bad_key", "no_such_key"]),
    (TrainRun("bad_launch", "grpo", "no_such_launch.yaml"), ["bad_launch", "no_such_launch.yaml"]),
    (TrainRun("fp32_engine", "grpo", "single_gpu.yaml", ("engine.dtype=float32",)), ["fp32_engine", "engine.dtype"]),
    (TrainRun("one_iteration", "grpo", "single_gpu.yaml", ("iterations=1",)), ["one_iteration", "no iteration after"]),
    (TrainRun("bad value", "grpo", "single_gpu.yaml"), ["plain file name"]),
    (EngineCheck("sleep_3", "vllm", sleep_level=3), ["sleep_3", "sleep_level 3"]),
])
def test_validation_names_the_check_and_the_problem(bad, words):
    with pytest.raises(TableError) as e:
        validate_table([*TABLE[:2], bad])
    for w in words:
        assert w in str(e.value)


def test_validation_catches_a_name_used_twice():
    with pytest.raises(TableError, match="used twice"):
        validate_table([TABLE[1], TABLE[1]])


def test_the_tiers_cover_what_they_promise():
    from vineppo.config import load_config
    from vineppo.plan import read_launch

    base = select(TABLE, ("base",), full=True)
    runs = [s for s in base if isinstance(s, TrainRun)]
    assert all(s.backend == "hf" for s in base)
    strategy = lambda s: (read_launch(ROOT / "launch" / s.launch).strategy,  # noqa: E731
                          read_launch(ROOT / "launch" / s.launch).offload_optimizer)
    default = [s for s in runs if not s.full_only]
    assert {strategy(s) for s in default} == {("single", False), ("fsdp", False), ("zero2", False), ("zero2", True),
                                              ("zero3", False)}
    assert {s.algorithm for s in default if strategy(s)[0] == "single"} == {"vineppo", "ppo", "grpo"}
    assert {(strategy(s), s.algorithm) for s in runs if strategy(s)[0] != "single"} == \
        {((st, off), a) for st, off in (("fsdp", False), ("zero2", False), ("zero2", True), ("zero3", False))
         for a in ("vineppo", "ppo", "grpo")}
    cfgs = {s.name: load_config(ROOT / "configs/tiny/gsm8k_vineppo.yaml",
                                train_overrides(Path("m"), Path("d"), s.algorithm, s.backend) + list(s.extra))
            for s in runs}
    assert all(c.model.gradient_checkpointing and c.model.dtype == "bfloat16" and c.engine.dtype == "bfloat16"
               and c.iterations == 2 for c in cfgs.values())
    assert any(c.model.reference_offload for c in cfgs.values())
    assert any(c.model.lora is not None and c.model.lora.sync == "merged" for c in cfgs.values())
    assert any(s.resume for s in default)
    assert {s.name for s in select(TABLE, ("base",), quick=True)} == {"memory_speed_0.5B", "push_streamed",
                                                                     "single_vineppo"}
    vllm = select(TABLE, ("vllm",))
    assert all(tier_of(s) == "vllm" for s in vllm)
    assert {s.sleep_level for s in vllm if isinstance(s, EngineCheck)} == {1, 2}
    vcfg = [load_config(ROOT / "configs/tiny/gsm8k_vineppo.yaml",
                        train_overrides(Path("m"), Path("d"), s.algorithm, "vllm") + list(s.extra))
            for s in vllm if isinstance(s, TrainRun)]
    assert {c.model.lora.sync for c in vcfg if c.model.lora is not None} == {"merged", "adapter"}
    assert any(c.model.attn_implementation == "flash_attention_2" for c in vcfg)
    assert all(c.engine.sleep_level == 1 for c in vcfg if c.model.lora is not None and c.model.lora.sync == "adapter")


def test_select_by_name_and_unknown_names():
    assert [s.name for s in select(TABLE, ("base",), names=["zero3_grpo"])] == ["zero3_grpo"]
    with pytest.raises(TableError, match="unknown check"):
        select(TABLE, ("base",), names=["nope"])


@pytest.mark.parametrize("name,strategy", [("fsdp_8gpu.yaml", "fsdp"), ("zero2_8gpu.yaml", "zero2"),
                                           ("zero3_8gpu.yaml", "zero3"), ("single_gpu.yaml", "single"),
                                           ("zero2_8gpu_offload.yaml", "zero2")])
def test_one_process_launch_keeps_the_strategy(tmp_path, name, strategy):
    import yaml

    from benchmarks.gpucheck.children import one_process_launch
    from vineppo.plan import read_launch

    src = ROOT / "launch" / name
    out = one_process_launch(src, tmp_path / name, port=29611)
    got = read_launch(out)
    assert (got.strategy, got.processes) == (strategy, 1)
    assert got.offload_optimizer == read_launch(src).offload_optimizer
    data = yaml.safe_load(out.read_text())
    assert data["main_process_port"] == 29611 and "gpu_ids" not in data
    assert yaml.safe_load(one_process_launch(src, tmp_path / "cpu.yaml", cpu=True).read_text())["mixed_precision"] == "no"


# ---- verifying a training run -------------------------------------------------------------------
def _fake_run(tmp_path, tiny_model_dir, tiny_tokenizer, gap: float, moved_by: float, iterations=(1, 2)) -> Path:
    """A run directory as `vineppo train` leaves it: metrics rows, iteration 2's episodes, the
    checkpoint of iteration 1 (the tiny model moved by `moved_by` noise)."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    # iteration 1's gap is far off: the verdict must read iteration 2's (the one after a push)
    rows = [{"iteration": i, "train/loss": 0.1, "sync/logprob_gap": gap if i == 2 else 0.5, "generate/tokens": 100,
             "generate/seconds": 2.0, "train/tokens_per_s": 50.0, "sync/seconds": 0.1} for i in iterations]
    out.mkdir()
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "episodes").mkdir()
    eps = [{"prompt_ids": tiny_tokenizer(q)["input_ids"], "response_ids": tiny_tokenizer(a)["input_ids"]}
           for q, a in (("Tom has 3 apples.", " He buys 4. 3+4=7"), ("Mia has 12 shells.", " 12-5=7 #### 7"))]
    (out / "episodes" / "iter_000002.rank0.jsonl").write_text("".join(json.dumps(e) + "\n" for e in eps))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(moved_by * torch.randn(p.shape, generator=g))
    model.save_pretrained(out / "checkpoints" / "iter_000001")
    return out


def test_verify_training_passes_an_agreeing_run_with_a_moved_policy(tmp_path, tiny_model_dir, tiny_tokenizer):
    from benchmarks.gpucheck.children import verify_training

    out = _fake_run(tmp_path, tiny_model_dir, tiny_tokenizer, gap=0.003, moved_by=0.01)
    status, detail, m = verify_training(out, tiny_model_dir)
    assert status == "pass", detail
    assert m["control_gap_without_push"] > MAX_LOGPROB_GAP and m["logprob_gap_after_push"] == 0.003
    assert m["logprob_gap_iteration_1"] == 0.5
    assert m["generate_tokens_per_s"] == 50.0


@pytest.mark.parametrize("gap,moved_by,iterations,words", [
    (0.2, 0.01, (1, 2), "does not hold the pushed weights"),
    (0.003, 0.0, (1, 2), "control agrees too"),
    (0.003, 0.01, (1,), "expected [1, 2]"),
    (float("nan"), 0.01, (1, 2), "does not hold"),
])
def test_verify_training_fails(tmp_path, tiny_model_dir, tiny_tokenizer, gap, moved_by, iterations, words):
    from benchmarks.gpucheck.children import verify_training

    out = _fake_run(tmp_path, tiny_model_dir, tiny_tokenizer, gap=gap, moved_by=moved_by, iterations=iterations)
    status, detail, _ = verify_training(out, tiny_model_dir)
    assert status == "fail" and words in detail


def test_policy_shift_of_the_same_weights_is_zero(tmp_path, tiny_model_dir, tiny_tokenizer):
    from benchmarks.gpucheck.children import policy_shift

    out = _fake_run(tmp_path, tiny_model_dir, tiny_tokenizer, gap=0.0, moved_by=0.0)
    assert policy_shift(tiny_model_dir, tiny_model_dir, out / "episodes" / "iter_000002.rank0.jsonl") == 0.0


# ---- the plan comparison and the ~0.5B model --------------------------------------------------------
def test_compare_with_plan_fails_only_an_underestimate():
    from benchmarks.gpucheck.perf import compare_with_plan

    gib = 2**30
    out = compare_with_plan({"train": 10 * gib, "logprobs": 10 * gib, "resident": 10 * gib},
                            {"train": 12 * gib, "logprobs": int(10.9 * gib), "resident": 9 * gib}, slack=0.10)
    assert [(p, ok) for p, ok, _ in out] == [("train", True), ("logprobs", True), ("resident", False)]
    assert "plan/measured 1.20" in out[0][2] and "plan/measured 0.90" in out[2][2]


def test_planned_allocator_bytes_leave_out_what_the_allocator_does_not_count():
    from benchmarks.gpucheck.perf import half_b_llama_config, planned_allocator_bytes
    from vineppo.config import load_config
    from vineppo.plan import Launch, plan_memory, shape_from_config

    cfg = load_config(ROOT / "configs/paper/rho1b_math_vineppo.yaml", ["model.name_or_path=x"])
    plan = plan_memory(shape_from_config(half_b_llama_config()), cfg, Launch("l", "single", 1), 80 * 2**30)
    phases = {p.name: p.parts for p in plan.phases}
    got = planned_allocator_bytes(plan)
    assert got["resident"] == phases["rollout"]["policy_weights"] + phases["rollout"]["policy_adam"] + \
        phases["rollout"]["reference"]
    assert got["train"] == phases["train"]["policy_weights"] + phases["train"]["policy_adam"] + \
        phases["train"]["reference"] + phases["train"]["policy_grads"] + phases["train"]["policy_autocast_bf16_weights"] \
        + phases["train"]["activations"] + phases["train"]["logits"]
    assert got["logprobs"] == sum(v for k, v in phases["logprobs"].items() if k not in ("cuda_context", "engine_asleep"))


def test_half_b_model_shape_on_meta():
    from benchmarks.gpucheck.perf import half_b_llama_config
    from vineppo.plan import shape_from_config

    s = shape_from_config(half_b_llama_config())
    by_hand = 2 * 32000 * 1280 + 24 * (4 * 1280 * 1280 + 3 * 1280 * 3456 + 2 * 1280) + 1280
    assert s.params == by_hand == 557_774_080
    assert (s.layers, s.hidden, s.vocab) == (24, 1280, 32000)


# ---- wheels and the no-CUDA exit -------------------------------------------------------------------
def test_missing_wheels_name_the_script(tmp_path, monkeypatch):
    from benchmarks.gpucheck import wheels

    assert wheels.install_missing(tmp_path)[0] is True  # everything needed is installed here
    monkeypatch.setattr(wheels, "NEEDED", {"no_such_module_xyz": "no-such-dist==1.0"})
    ok, detail = wheels.install_missing(tmp_path)
    assert not ok and "no-such-dist==1.0" in detail and "gpu_wheels.sh" in detail
    (tmp_path / "other-1.0-py3-none-any.whl").write_bytes(b"not a wheel")
    ok, detail = wheels.install_missing(tmp_path)
    assert not ok and "--no-index" in detail
    ok, detail = wheels.import_all(("json", "no_such_module_xyz"))
    assert not ok and "no_such_module_xyz" in detail


def test_without_cuda_the_table_is_validated_and_nothing_checked():
    proc = subprocess.run([PY, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "gpu_check: no CUDA device, nothing checked"
    assert [line.split(" (")[0] for line in lines[:-1] if line.startswith(("PASS", "FAIL"))] == \
        ["PASS wheels", "PASS imports", "PASS run_table"]
    assert f"{len(TABLE)} checks load" in lines[-2]


def test_a_passed_deadline_reports_every_check_not_run_with_exit_2(tmp_path):
    """Past the deadline before any check: the preflight still ran, every check is reported not run,
    the exit status says so, and --keep DIR holds gpu_check.json."""
    keep = tmp_path / "keep"
    proc = subprocess.run([PY, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-rehearsal", "--quick", "--tier", "base",
                           "--deadline", "0", "--keep", str(keep)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "gpu_check: 3 passed, 0 failed, 4 not run"
    assert [line.split(":")[0] for line in lines if line.startswith("NOT RUN")] == \
        ["NOT RUN memory_speed_0.5B", "NOT RUN push_streamed", "NOT RUN inputs", "NOT RUN single_vineppo"]
    data = json.loads((keep / "gpu_check.json").read_text())
    assert [c["status"] for c in data["checks"]] == ["pass"] * 3 + ["not run"] * 4
    assert data["summary"] == lines[-1] and data["deadline_s"] == 0


@pytest.mark.slow
def test_cpu_rehearsal_of_the_push_keeps_its_log_and_json(tmp_path):
    """End to end on CPU: the engine check runs in its own process, passes, and leaves its full log
    and gpu_check.json in --keep DIR."""
    keep = tmp_path / "keep"
    proc = subprocess.run([PY, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu-rehearsal", "--only", "push_streamed",
                           "--keep", str(keep)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "gpu_check: 4 passed, 0 failed"
    data = json.loads((keep / "gpu_check.json").read_text())
    check = next(c for c in data["checks"] if c["name"] == "push_streamed")
    m = check["measures"]
    assert check["status"] == "pass" and m["logprob_gap_after_push"] <= MAX_LOGPROB_GAP < m["control_gap_without_push"]
    assert m["engine_dtype"] == "torch.bfloat16"
    assert Path(check["log"]) == keep / "logs" / "push_streamed.log" and Path(check["log"]).stat().st_size > 0
    assert [c["name"] for c in data["checks"]] == ["wheels", "imports", "run_table", "push_streamed"]
