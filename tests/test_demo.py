"""The embedded demo: the synthetic arithmetic task and a fast smoke run of `run_demo`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vineppo.tasks import get_task
from vineppo.tasks.arithmetic import (MAX_NUMBER, ArithmeticTask, generate_problems, make_splits, problem_key,
                                      sample_key, solve)

LINE = re.compile(r"(\d+)([-+*])(\d+)=(\d+)")


def test_registered():
    task = get_task("arithmetic")
    assert isinstance(task, ArithmeticTask)
    assert task.name == "arithmetic"
    assert task.required_fields == ("question", "answer")


def test_format_and_operations():
    rows = generate_problems(500, seed=3)
    task = get_task("arithmetic")
    n_ops_seen = set()
    for r in rows:
        assert set(r) == {"question", "answer"}
        *lines, last = r["answer"].split("\n")
        assert last.startswith("#### ")
        assert 2 <= len(lines) <= 4
        n_ops_seen.add(len(lines))
        value = None
        muls = 0
        for line in lines:
            m = LINE.fullmatch(line)
            assert m, line
            a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
            assert value is None or a == value  # each line continues from the previous result
            if value is None:
                assert 2 <= a <= MAX_NUMBER
            if op == "*":
                muls += 1
                assert 2 <= b <= 4
            else:
                assert 1 <= b <= MAX_NUMBER
            value = {"+": a + b, "-": a - b, "*": a * b}[op]
            assert c == value and value >= 0
        assert muls <= 1
        assert last == f"#### {value}"
        assert task.gold_answer(r) == str(value)
        # the question names every operand and asks for the result
        assert r["question"].endswith("now?")
        start, ops = problem_key(r)
        for n in [start] + [b for op, b in ops if op != "*"]:
            assert re.search(rf"\b{n}\b", r["question"]), (n, r["question"])
    assert n_ops_seen == {2, 3, 4}
    assert any("*" in r["answer"] for r in rows) and any("*" not in r["answer"] for r in rows)


def test_deterministic_with_seed():
    assert generate_problems(50, seed=1) == generate_problems(50, seed=1)
    assert generate_problems(50, seed=1) != generate_problems(50, seed=2)
    a, b = make_splits(300, 50, seed=5), make_splits(300, 50, seed=5)
    assert a == b


def test_train_test_disjoint():
    train, test = make_splits(5000, 200, seed=0)
    assert len(train) == 5000 and len(test) == 200
    train_keys = {problem_key(r) for r in train}
    test_keys = {problem_key(r) for r in test}
    assert len(train_keys) == 5000 and len(test_keys) == 200  # no duplicate computation either
    assert not train_keys & test_keys
    # test does not depend on the train size
    assert make_splits(10, 200, seed=0)[1] == test


def test_gold_graded_correct_and_wrong_answers_rejected():
    task = get_task("arithmetic")
    train, test = make_splits(1000, 100, seed=1)
    for r in train + test:
        assert task.is_correct(r["answer"], r)
        assert task.reward(task.sft_target(r), r) == 1.0
        wrong = r["answer"].rsplit("#### ", 1)[0] + f"#### {int(task.gold_answer(r)) + 1}"
        assert not task.is_correct(wrong, r)
        assert not task.is_correct(r["answer"].rsplit("\n#### ", 1)[0], r)  # no answer line
        assert task.prompt(r).startswith("[MATH_TASK] Problem:\n")


def test_splitter_one_step_per_line():
    task = get_task("arithmetic")
    for r in generate_problems(200, seed=4):
        response = task.sft_target(r)  # "\n{solution}\n": what the model is trained to produce
        o = task.split_steps(response)
        steps = [response[a:b] for a, b in zip(o, o[1:])]
        n_lines = len(r["answer"].split("\n")) - 1  # the "####" tail joins the last line's step
        assert len(steps) == n_lines
        assert "".join(steps) == response
        assert steps[-1].rstrip("\n").endswith(f"#### {task.gold_answer(r)}")
        for s, line in zip(steps, r["answer"].split("\n")):
            assert line in s


def test_solve_and_key_roundtrip():
    import random

    rng = random.Random(0)
    for _ in range(200):
        key = sample_key(rng)
        lines, answer = solve(key)
        row = {"question": "q", "answer": "\n".join(lines) + f"\n#### {answer}"}
        assert problem_key(row) == key


def test_demo_config_loads():
    from vineppo.demo import load_demo_config

    dc = load_demo_config(None, ["iterations=3", "demo.eval.n_samples=2", "mc.k=2"])
    assert dc.train.iterations == 3 and dc.train.mc.k == 2 and dc.demo.eval.n_samples == 2
    assert dc.train.data.task == "arithmetic"
    m = dc.demo.model
    assert dc.demo.sft.max_steps and (m.hidden_size, m.num_layers, m.num_heads, m.intermediate_size) == (64, 4, 2, 256)
    assert m.hidden_size // m.num_heads >= 32  # vLLM's CPU attention needs head_dim >= 32
    default = load_demo_config(None, [])
    assert (default.train.iterations, default.train.save_every) == (15, 5)
    from vineppo.config import ConfigError
    with pytest.raises(ConfigError):
        load_demo_config(None, ["demo.nope=1"])


# ----------------------------------------------------------------------------- smoke run

SMOKE = [
    "iterations=2", "save_every=1", "episodes.questions_per_iteration=4", "episodes.samples_per_question=4",
    "mc.k=2", "ppo.minibatch_size=16", "ppo.micro_batch_size=16", "data.validation_size=8",
    "sampling.max_new_tokens=48",
    "demo.data.train_problems=300", "demo.data.test_problems=8", "demo.sft.max_steps=6", "demo.sft.batch_size=16",
    "demo.sft.micro_batch_size=16", "demo.model.num_layers=1", "demo.model.intermediate_size=128",
    "demo.eval.n_samples=2", "demo.eval.max_new_tokens=48", "demo.torch_threads=1",
    # the stop-at-accuracy check runs (steps 3 and 5) but a 100 % target is never met
    "demo.sft_stop.validation_pass=1.0", "demo.sft_stop.min_steps=3", "demo.sft_stop.every=2",
    "demo.sft_stop.problems=4",
]


def test_pick_torch_threads():
    import torch

    from vineppo.demo import pick_torch_threads
    from vineppo.tiny import TinyModelConfig

    before = torch.get_num_threads()
    n, timing = pick_torch_threads(TinyModelConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128),
                                   seq_len=16, batch=4, repeats=1)
    assert n >= 1 and torch.get_num_threads() == before
    assert not timing or (set(timing) <= {1, before} and all(t > 0 for t in timing.values()))


def test_sft_should_stop_ends_early_and_greedy_check_runs(one_torch_thread):
    from vineppo.demo import greedy_pass_rate
    from vineppo.sft import SFTConfig, sft
    from vineppo.tiny import TinyModelConfig, build_model, build_tokenizer

    task = get_task("arithmetic")
    rows = generate_problems(64, seed=2)
    tok = build_tokenizer([task.prompt(r) + task.sft_target(r) for r in rows], 320)
    model = build_model(tok, TinyModelConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128))
    seen = []

    def stop(step, loss):
        seen.append((step, loss, model.training))
        return step == 3

    stats = sft(model, tok, task, rows, SFTConfig(max_steps=10, batch_size=8, micro_batch_size=8, lr=1e-3,
                                                  lr_schedule="constant", group_by_length=True),
                progress=False, should_stop=stop)
    assert stats["steps"] == 3 and stats["planned_steps"] == 10
    assert [s for s, _, _ in seen] == [1, 2, 3] and all(training for _, _, training in seen)
    assert all(loss > 0 for _, loss, _ in seen)
    rate = greedy_pass_rate(model, tok, rows[:4], max_new_tokens=8)
    assert rate == 0.0  # 3 steps of a random model, 8 tokens: cannot write a solution


def test_demo_config_rejects_bad_sft_stop():
    from vineppo.config import ConfigError
    from vineppo.demo import load_demo_config

    with pytest.raises(ConfigError, match="validation_pass"):
        load_demo_config(None, ["demo.sft_stop.validation_pass=1.5"])
    with pytest.raises(ConfigError, match="validation_size"):
        load_demo_config(None, ["data.validation_size=0"])
    assert load_demo_config(None, ["data.validation_size=0", "demo.sft_stop.validation_pass=null"])


@pytest.mark.slow
def test_run_demo_smoke(tmp_path, capsys):
    """Two short demos in a row: the second reuses the cached SFT start (and its evaluation)."""
    from vineppo.demo import PLOT_FILE, SUMMARY_FILE, run_demo

    cache = tmp_path / "cache"
    out = tmp_path / "demo"
    res = run_demo(out, overrides=SMOKE + ["engine.backend=hf"], cache_dir=cache)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert {"sft", "sft_continued", "ppo", "vineppo", "seconds", "sd", "rl_seconds", "vineppo_minus_ppo",
            "seeds"} <= set(summary)
    assert summary["seeds"] == 1 and summary["sd"] == {"vineppo": None, "ppo": None}
    assert summary["vineppo_minus_ppo"]["n"] == 1
    assert summary["vineppo_minus_ppo"]["mean"] == pytest.approx(summary["vineppo"] - summary["ppo"], abs=0.02)
    assert summary["rl_seconds"]["vineppo"] > 0
    assert summary["seconds"] > 0
    assert {k: res[k] for k in summary} == summary
    # every number of summary.json is the pass@1 of the evaluation file it came from
    def pass1(path):
        return round(100 * json.loads(path.read_text())["pass@1"], 2)

    for algo in ("vineppo", "ppo"):
        assert summary[algo] == pass1(out / "runs" / algo / "checkpoints" / "iter_000002" / "eval" / "test" / "results.json")
        assert summary["sft"] == pass1(out / "runs" / algo / "initial" / "eval" / "test" / "results.json")
    cont_results = list(Path(res["details"]["sft_continued"]["dir"]).rglob("test*/results.json"))
    assert len(cont_results) == 1 and summary["sft_continued"] == pass1(cont_results[0])
    # the plot's data: each run's test curve ends at its summary number, starts at the SFT start
    drawn = json.loads((out / PLOT_FILE).with_suffix(".json").read_text())
    for algo in ("vineppo", "ppo"):
        assert drawn["runs"][algo]["test"][0] == [0, pytest.approx(summary["sft"], abs=0.01)]
        assert drawn["runs"][algo]["test"][-1] == [2, pytest.approx(summary[algo], abs=0.01)]
    assert drawn["sft_continued"] == pytest.approx(summary["sft_continued"], abs=0.01)
    assert (out / "compare" / "compare.md").is_file()
    for algo in ("vineppo", "ppo"):
        run = out / "runs" / algo
        assert [json.loads(l)["iteration"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
        assert (run / "checkpoints" / "iter_000002" / "eval" / "test" / "results.json").is_file()
        assert (run / "initial" / "eval" / "test" / "results.json").is_file()
    sft_dirs = [p for p in cache.glob("demo-sft-*") if "-continued-" not in p.name]
    assert len(sft_dirs) == 1
    assert [p.name for p in cache.glob("demo-sft-*-continued-*")] == [f"{sft_dirs[0].name}-continued-2"]
    first = capsys.readouterr().out
    assert "trained and cached" in first and "SFT start" in first and "VinePPO" in first
    assert "SFT continued" in first and "VinePPO − PPO" in first
    # the SFT-continued control: as many SFT steps as each RL run's optimizer steps (2 x 16 / 16)
    cont = res["details"]["sft_continued"]
    assert cont["steps"] == 2 and cont["info"]["steps"] == 2 and Path(cont["dir"]).is_dir()
    # the stop check ran at steps 3 and 5, the 100 % target was not met: all 6 steps ran
    info = json.loads((sft_dirs[0] / "demo_sft.json").read_text())
    assert [s for s, _ in info["validation_checks"]] == [3, 5] and info["steps"] == 6
    assert not info["stopped_at_target"]
    # PPO trained in a second process (parallel_runs: auto on a >= 2-core machine)
    import os
    if (os.cpu_count() or 1) >= 2:
        assert "training in its own process" in first
        assert (out / "runs" / "ppo.log").is_file() and (out / "runs" / "ppo.config.yaml").is_file()
        # ... and evaluated its own checkpoints there
        assert "evaluated: {" in (out / "runs" / "ppo.log").read_text()

    # second run, same output dir: SFT (and its evaluation) come from the cache; runs are replaced;
    # two RL seeds of VinePPO and GRPO (no PPO)
    stamp = (sft_dirs[0] / "model.safetensors").stat().st_mtime_ns
    res2 = run_demo(out, overrides=SMOKE + ["engine.backend=hf"], cache_dir=cache, include_ppo=False,
                    seeds=2, algorithms=["vineppo", "ppo", "grpo"])
    second = capsys.readouterr().out
    assert "reused from the cache" in second and str(sft_dirs[0]) in second
    assert (sft_dirs[0] / "model.safetensors").stat().st_mtime_ns == stamp
    assert res2["sft"] == summary["sft"]  # same start, same evaluation
    assert res2["ppo"] is None
    assert not (out / "runs" / "ppo").exists()  # the earlier PPO run is not left behind
    assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()) == [
        "grpo-seed0", "grpo-seed1", "vineppo-seed0", "vineppo-seed1"]
    s2 = json.loads((out / SUMMARY_FILE).read_text())
    assert s2["seeds"] == 2 and s2["vineppo_minus_ppo"] is None and s2["sd"]["grpo"] is not None
    seeds = {r["seed"] for r in res2["details"]["runs"].values()}
    assert len(seeds) == 2  # two different RL seeds
    assert "GRPO" in second
    assert json.loads((out / SUMMARY_FILE).read_text())["ppo"] is None
    assert res2["details"]["sft_cached"] is True


def test_method_stats_and_paired_difference_by_hand():
    from vineppo.demo.report import final_table, method_stats, paired_difference

    def run(algo, seed, test):
        return {"algorithm": algo, "seed_index": seed, "test": test, "iteration_seconds": 10.0 * (seed + 1),
                "final_iteration": 20}

    runs = {"vineppo-seed0": run("vineppo", 0, 0.60), "ppo-seed0": run("ppo", 0, 0.50),
            "vineppo-seed1": run("vineppo", 1, 0.70), "ppo-seed1": run("ppo", 1, 0.56),
            "vineppo-seed2": run("vineppo", 2, 0.65)}
    st = method_stats(runs)
    assert st["vineppo"]["mean"] == pytest.approx(65.0) and st["vineppo"]["sd"] == pytest.approx(5.0)
    assert st["ppo"]["mean"] == pytest.approx(53.0) and st["ppo"]["n"] == 2
    assert st["vineppo"]["rl_seconds"] == pytest.approx(20.0)
    d = paired_difference(runs, "vineppo", "ppo")  # seed 2 has no PPO run: not paired
    assert d["n"] == 2 and d["values"] == [10.0, 14.0] and d["mean"] == 12.0
    assert d["sd"] == pytest.approx(2.83, abs=0.01)
    assert paired_difference(runs, "vineppo", "grpo") is None
    table = final_table(0.5, st, "(cached)", sft_continued=0.52, sft_continued_steps=40, diff=d)
    assert "65.0% ± 5.0" in table and "SFT continued" in table and "+2.0" in table
    assert "VinePPO − PPO: +12.0 points ± 2.8" in table


def test_plan_runs_names_seeds_and_rejects_unknown_algorithms(tmp_path):
    from vineppo.config import ConfigError
    from vineppo.demo import load_demo_config
    from vineppo.demo.runs import plan_runs

    base = load_demo_config().train
    jobs = plan_runs(base, ["vineppo", "grpo"], 2, tmp_path / "sft", tmp_path / "data")
    assert [j.name for j in jobs] == ["vineppo-seed0", "grpo-seed0", "vineppo-seed1", "grpo-seed1"]
    assert [j.cfg.seed - base.seed for j in jobs] == [0, 0, 1, 1]
    assert jobs[1].cfg.algorithm == "grpo" and jobs[1].cfg.model.name_or_path == str(tmp_path / "sft")
    assert [j.name for j in plan_runs(base, ["ppo"], 1, tmp_path, tmp_path)] == ["ppo"]
    with pytest.raises(ValueError, match="unknown"):
        plan_runs(base, ["a2c"], 1, tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="demo.algorithms"):
        load_demo_config(None, ["demo.algorithms=[vineppo,a2c]"])
    with pytest.raises(ConfigError, match="demo.seeds"):
        load_demo_config(None, ["demo.seeds=0"])


def test_run_header_names_the_critic_lr(capsys):
    """A PPO run's header line gives the critic's own LR (`ppo.critic_lr`, else `optim.lr`)."""
    import dataclasses

    from vineppo.demo import load_demo_config
    from vineppo.demo.runs import _describe_run

    base = dataclasses.replace(load_demo_config().train, algorithm="ppo")
    base.optim.lr, base.ppo.critic_lr = 2.5e-4, 7.0e-3
    _describe_run("ppo", base)
    assert "critic + GAE (critic lr 0.007)" in capsys.readouterr().out
    base.ppo.critic_lr = None
    _describe_run("ppo", base)
    assert "critic + GAE (critic lr 0.00025)" in capsys.readouterr().out


def test_caches_are_keyed_by_the_code(monkeypatch):
    """A change to any source file (or the version) changes the SFT and evaluation cache keys."""
    import vineppo
    from vineppo.demo import load_demo_config, sft_cache_key
    from vineppo.demo.config import code_fingerprint

    demo = load_demo_config().demo
    rows = [{"question": "q", "answer": "a"}]
    before, key = code_fingerprint(), sft_cache_key(demo, rows, threads=2)
    assert code_fingerprint() == before
    monkeypatch.setattr(vineppo, "__version__", vineppo.__version__ + ".dev1")
    assert code_fingerprint() != before and sft_cache_key(demo, rows, threads=2) != key
    monkeypatch.undo()
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes",
                        lambda self: real(self) + (b"# edited" if self.name == "sft.py" else b""))
    assert code_fingerprint() != before


def test_sft_cache_key_sees_the_cpu_code_paths():
    from vineppo.demo import load_demo_config, sft_cache_key

    demo = load_demo_config().demo
    rows = [{"question": "q", "answer": "a"}]
    a = {"aten": "AVX2", "mkl_cbwr": "AVX2", "torch": "2.13.0"}
    assert sft_cache_key(demo, rows, threads=2, numerics=a) != sft_cache_key(demo, rows, threads=2,
                                                                              numerics={**a, "aten": "AVX512"})
    assert sft_cache_key(demo, rows, threads=2, numerics=a) != sft_cache_key(demo, rows, threads=2,
                                                                              numerics={**a, "mkl_cbwr": None})


def test_demo_command_pins_the_cpu_code_paths(monkeypatch):
    """`vineppo demo` sets ATEN_CPU_CAPABILITY / MKL_CBWR (x86) unless the user did."""
    import os
    import platform

    from vineppo import cli

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    cli._pin_demo_numerics()
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2" and os.environ["MKL_CBWR"] == "AUTO"
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    cli._pin_demo_numerics()
    assert "ATEN_CPU_CAPABILITY" not in os.environ


def test_sft_cache_key_sees_the_thread_count():
    from vineppo.demo import load_demo_config, sft_cache_key

    demo = load_demo_config().demo
    assert demo.torch_threads == 2  # fixed by default: the same SFT start on every machine
    rows = [{"question": "q", "answer": "a"}]
    assert sft_cache_key(demo, rows, threads=1) != sft_cache_key(demo, rows, threads=2)
    assert sft_cache_key(demo, rows, threads=2) == sft_cache_key(demo, rows, threads=2)


# ----------------------------------------------------------------------------- the CLI, end to end

#: what third-party libraries print when nothing routes it away (vLLM, torch, DeepSpeed, safetensors)
THIRD_PARTY_MARKERS = ("FutureWarning", "reduce_op", "NUMA", "Triton", "Loading safetensors", "DeepSpeed",
                       "WARNING vllm", "INFO vllm", "libtcmalloc", "Loading weights")


def _pass1(path: Path) -> float:
    return round(100 * json.loads(path.read_text())["pass@1"], 2)


@pytest.mark.slow
@pytest.mark.vllm
def test_vineppo_demo_cli_quiet_console_and_summary_from_result_files(tmp_path):
    """`vineppo demo` as a user runs it (a subprocess, vLLM engine, a tiny config): the console has
    the demo's lines and table and nothing from third-party libraries (those are in DIR/log.txt);
    every number of summary.json and of the plot's data is the pass@1 of the results file it came from."""
    import os
    import subprocess
    import sys

    from vineppo.demo import PLOT_FILE, SUMMARY_FILE

    out = tmp_path / "demo"
    env = {**os.environ, "VINEPPO_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(Path(__file__).parents[1])}
    p = subprocess.run([sys.executable, "-m", "vineppo", "demo", "--output-dir", str(out), *SMOKE],
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    terminal = p.stdout + p.stderr
    for marker in THIRD_PARTY_MARKERS:
        assert marker not in terminal, (marker, terminal)
    log = (out / "log.txt").read_text()
    assert "vllm" in log and "reduce_op" in log  # the engine's output went to the log instead
    assert "[demo] SFT start trained and cached" in p.stdout and "VinePPO − PPO" in p.stdout
    # the SFT start was computed on the pinned code paths (the same weights on AVX2 and AVX-512 CPUs)
    import platform
    if platform.machine().lower() in ("x86_64", "amd64") and "ATEN_CPU_CAPABILITY" not in os.environ:
        info = json.loads(next((tmp_path / "cache").glob("demo-sft-*/demo_sft.json")).read_text())
        assert info["numerics"]["aten"] == "AVX2" and info["numerics"]["mkl_cbwr"] == "AVX2"

    summary = json.loads((out / SUMMARY_FILE).read_text())
    final = {a: out / "runs" / a / "checkpoints" / "iter_000002" / "eval" / "test" / "results.json"
             for a in ("vineppo", "ppo")}
    initial = out / "runs" / "vineppo" / "initial" / "eval" / "test" / "results.json"
    assert summary["vineppo"] == _pass1(final["vineppo"]) and summary["ppo"] == _pass1(final["ppo"])
    assert summary["sft"] == _pass1(initial)
    assert summary["vineppo_minus_ppo"]["values"] == [pytest.approx(summary["vineppo"] - summary["ppo"], abs=0.02)]
    # the table printed is the summary's
    row = next(l for l in p.stdout.splitlines() if l.startswith("VinePPO "))
    assert f"{summary['vineppo']:.1f}%" in row and f"{summary['vineppo'] - summary['sft']:+.1f}" in row

    # the plot's data: each run's curve is (0, SFT start) then every evaluated checkpoint, in order,
    # and its reward curve is metrics.jsonl's reward/mean per iteration
    assert (out / PLOT_FILE).is_file()
    drawn = json.loads((out / PLOT_FILE).with_suffix(".json").read_text())
    assert drawn["sft"] == pytest.approx(100 * json.loads(initial.read_text())["pass@1"])
    for algo in ("vineppo", "ppo"):
        run = out / "runs" / algo
        ckpts = {i: run / "checkpoints" / f"iter_{i:06d}" / "eval" / "test" / "results.json" for i in (1, 2)}
        assert drawn["runs"][algo]["test"] == [[0, pytest.approx(drawn["sft"])]] + [
            [i, pytest.approx(100 * json.loads(f.read_text())["pass@1"])] for i, f in ckpts.items()]
        metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        assert drawn["runs"][algo]["reward"] == [[m["iteration"], pytest.approx(m["reward/mean"])] for m in metrics]


def test_plot_series_is_the_evaluated_curve_from_the_sft_start(tmp_path, monkeypatch):
    """The demo plot's data: (0, SFT start) then every checkpoint in iteration order (in %), the
    reward per iteration without missing values; written beside the PNG."""
    from vineppo.demo import DemoEval
    from vineppo.demo.report import plot_demo, plot_series

    runs = {"vineppo": {"algorithm": "vineppo", "curve": {20: {"test": 0.61}, 10: {"test": 0.55}},
                        "reward": [(1, 0.4), (2, None), (3, 0.5)], "seed_index": 0, "test": 0.61,
                        "iteration_seconds": 1.0, "final_iteration": 20}}
    data = plot_series(0.444, runs, sft_continued=0.484)
    assert data["sft"] == pytest.approx(44.4) and data["sft_continued"] == pytest.approx(48.4)
    assert data["runs"]["vineppo"]["test"] == [(0, pytest.approx(44.4)), (10, pytest.approx(55.0)),
                                               (20, pytest.approx(61.0))]
    assert data["runs"]["vineppo"]["reward"] == [(1, 0.4), (3, 0.5)]
    png = plot_demo(tmp_path / "demo.png", 0.444, runs, DemoEval(), 200, sft_continued=0.484)
    assert json.loads(png.with_suffix(".json").read_text())["runs"]["vineppo"]["test"][1] == [10, pytest.approx(55.0)]
    import vineppo.demo.report as report

    titles = []
    monkeypatch.setattr(report, "save_panels", lambda fig, axes, path, title: titles.append(title))
    plot_demo(tmp_path / "chain.png", 0.444, runs, DemoEval(), 200, task="arithmetic chains of 5-7 operations")
    assert titles == ["vineppo demo: arithmetic chains of 5-7 operations, tiny Llama on CPU"]


def test_run_queue_returns_the_summaries_in_job_order_whichever_run_ends_first(tmp_path, monkeypatch):
    """The queue starts 2 runs before `wait_all`; later jobs can end first. Summaries (and so the
    tables, plots and by-length rows built from them) keep the jobs' order: seed-major, methods
    in `--algorithms` order."""
    import vineppo.demo.runs as runs_mod

    ends = {"vineppo-seed0": 3, "ppo-seed0": 2, "grpo-seed0": 0, "vineppo-seed1": 1}  # polls until done
    started: list[str] = []

    class FakeRun:
        def __init__(self, cfg, run_dir, splits, data_dir, ev):
            self.run_dir, self.log_file, self.polls = run_dir, run_dir.with_suffix(".log"), ends[run_dir.name]
            started.append(run_dir.name)

        def done(self):
            self.polls -= 1
            return self.polls < 0

        def wait(self):
            return 1.0

        def kill(self):
            pass

    monkeypatch.setattr(runs_mod, "_BackgroundRun", FakeRun)
    monkeypatch.setattr(runs_mod, "_describe_run", lambda name, cfg: None)
    monkeypatch.setattr(runs_mod, "_report", lambda name, s: None)
    monkeypatch.setattr(runs_mod, "_collect_run", lambda job, run_dir, splits, sft, seconds: {"name": job.name})
    jobs = [runs_mod.RunJob(n, n.split("-")[0], int(n[-1]), None) for n in ends]
    queue = runs_mod.RunQueue(jobs, tmp_path, {}, tmp_path, None, 2)
    queue.fill()
    assert started == ["vineppo-seed0", "ppo-seed0"]
    out = queue.wait_all({}, poll_seconds=0.0)
    assert list(out) == list(ends) and [s["name"] for s in out.values()] == list(ends)
    assert started == ["vineppo-seed0", "ppo-seed0", "grpo-seed0", "vineppo-seed1"]
