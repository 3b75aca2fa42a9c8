"""The long-chain task (vineppo/tasks/chain.py): its exact oracle on hand-written responses, its
generator, and the long-chain demo's configuration (configs/demo_chain.yaml)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from vineppo.tasks import get_task
from vineppo.tasks.chain import (ChainTask, chain_key, first_slip, first_wrong_line, first_wrong_step,
                                 generate_chain_problems,
                                 make_chain_splits, next_step_is_correct, oracle_step_pairs, oracle_value,
                                 render_chain, spellings)
from vineppo.tasks.gsm8k import GSM8KTask

ROOT = Path(__file__).resolve().parents[1]
CHAIN_CONFIG = ROOT / "configs" / "demo_chain.yaml"

# 12 +7 -> 19, -5 -> 14, *3 -> 42, +3 -> 45, -4 -> 41 (worked out by hand)
ROW = {"question": "Mia has 12 shells. She finds 7, gives away 5, triples them, gets 3, loses 4. How many shells now?",
       "answer": "7+12=19\n19-5=14\n14*3=42\n3+42=45\n45-4=41\n#### 41"}
KEY = (12, (("+", 7), ("-", 5), ("*", 3), ("+", 3), ("-", 4)))
GOOD_A = "\n12+7=19\n19-5=14\n14*3=42\n42+3=45\n45-4=41\n#### 41\n"
GOOD_B = "\n7+12=19\n19-5=14\n3*14=42\n3+42=45\n45-4=41\n#### 41\n"
LINE = re.compile(r"(\d+)([-+*])(\d+)=(\d+)")


def _prefixes(text: str) -> list[str]:
    """Every line-boundary prefix of `text` (the states of the newline splitter)."""
    return [text[: i + 1] for i, ch in enumerate(text) if ch == "\n"]


def test_registered_and_hooks():
    task = get_task("chain")
    assert isinstance(task, ChainTask) and isinstance(task, GSM8KTask) and task.name == "chain"
    assert task.oracle_value(ROW, "\n12+7=20\n") == 0.0 and task.oracle_value(ROW, "\n12+7=19\n") is None
    assert task.first_wrong_line(ROW, GOOD_A) is None
    task.validate_row(ROW)
    with pytest.raises(ValueError, match="not a chain problem"):
        task.validate_row({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"})


def test_chain_key_and_spellings_by_hand():
    assert chain_key(ROW) == KEY
    assert spellings(19, ("+", 7)) == ("19+7=26", "7+19=26")
    assert spellings(14, ("*", 3)) == ("14*3=42", "3*14=42")
    assert spellings(19, ("-", 5)) == ("19-5=14",)  # not commutative: one spelling
    assert spellings(4, ("+", 4)) == ("4+4=8",)  # equal operands: one text
    with pytest.raises(ValueError, match="does not continue"):
        chain_key({**ROW, "answer": "7+12=19\n5-19=14\n#### 14"})


def test_correct_responses_in_both_spellings():
    task = get_task("chain")
    for good in (GOOD_A, GOOD_B, GOOD_A.replace("\n", "\n\n")):  # blank lines are not lines
        assert first_wrong_line(ROW, good) is None
        assert task.is_correct(good, ROW) and task.reward(good, ROW) == 1.0
        assert all(oracle_value(ROW, p) is None for p in _prefixes(good))
    # spaces inside a line are not part of it
    assert first_wrong_line(ROW, "\n12 + 7 = 19\n19 -5=14\n") is None
    assert GOOD_A != GOOD_B and task.extract_answer(GOOD_B) == "41"


def test_slip_at_line_3_is_final():
    task = get_task("chain")
    slip = "\n12+7=19\n19-5=14\n14*3=42\n42+3=46\n46-4=42\n#### 42\n"
    assert first_wrong_line(ROW, slip) == 3
    s = first_slip(ROW, slip)
    assert s.kind == "arithmetic" and slip[s.offset:].startswith("42+3=46")
    assert not task.is_correct(slip, ROW)
    values = [oracle_value(ROW, p) for p in _prefixes(slip)]
    # prefixes end after: "", line 0, 1, 2 (unknown), 3, 4, answer (value exactly 0)
    assert values == [None, None, None, None, 0.0, 0.0, 0.0]
    # an unfinished last line is wrong only when no correct line starts with it
    assert oracle_value(ROW, "\n12+7=19\n19-5=14\n14*3=42\n42+3=4") is None  # may become 45
    assert oracle_value(ROW, "\n12+7=19\n19-5=14\n14*3=42\n42+3=46") == 0.0
    assert oracle_value(ROW, "\n12+7=19\n19-5=14\n14*3=42\n3+4") is None  # "3+42=45"
    assert oracle_value(ROW, "\n12+7=19\n19-5=14\n14*3=42\n3-") == 0.0


def test_a_slip_repaired_later_is_still_wrong():
    """GSM8K's `####` comparison alone would accept this response; the chain task does not, which is
    what makes the value after a slip exactly 0."""
    repaired = "\n12+7=19\n19-5=15\n14*3=42\n42+3=45\n45-4=41\n#### 41\n"
    assert GSM8KTask(remove_calculator=False).is_correct(repaired, ROW)
    assert not get_task("chain").is_correct(repaired, ROW)
    assert first_wrong_line(ROW, repaired) == 1
    assert get_task("chain").grade_many([repaired, GOOD_B], [ROW, ROW]) == [False, True]


@pytest.mark.parametrize("response, line, kind", [
    ("\n12+7=19\n19*3=57\n57+3=60\n", 1, "skipped"),  # the subtraction is skipped
    ("\n12+7=19\n19+7=26\n", 1, "repeated"),  # "finds 7" applied twice
    ("\n12+8=20\n", 0, "operand"),
    ("\n12+7=19\n5-19=14\n", 1, "operand"),  # `-` is not commutative
    ("\n12+7=19\n19-5=14\n14*3=42\n42+3=45\n45-4=41\n#### 40\n", 5, "wrong_answer"),
    ("\n12+7=19\n19-5=14\n#### 14\n", 2, "early_answer"),
    ("\n12+7=19\n19-5=14\n14*3=42\n42+3=45\n45-4=41\n41+4=45\n#### 45\n", 5, "extra"),
    ("\n12+7=19\n19-5=14\n14*3=42\n42+3=45\n45-4=41\n#### 41\n#### 41\n", 6, "extra"),
    ("\n12+7=19\nso 19-5 is 14\n", 1, "unreadable"),
])
def test_first_wrong_line_by_kind(response, line, kind):
    s = first_slip(ROW, response)
    assert (s.line, s.kind) == (line, kind)
    assert first_wrong_line(ROW, response) == line
    assert not get_task("chain").is_correct(response, ROW)
    # the state right after the wrong line has value exactly 0, the one before it is unknown
    start = s.offset
    end = response.index("\n", start) + 1
    assert oracle_value(ROW, response[:end]) == 0.0
    assert oracle_value(ROW, response[:start]) is None


def test_first_wrong_step_is_the_step_holding_the_first_wrong_line():
    task = get_task("chain")
    slip = "\n12+7=19\n19-5=14\n14*3=42\n42+3=46\n46-4=42\n#### 42\n"
    # the newline splitter's steps: "\n12+7=19", "\n19-5=14", "\n14*3=42", "\n42+3=46", "\n46-4=42\n#### 42\n"
    assert task.first_wrong_step(ROW, slip) == 3
    assert first_wrong_step(ROW, slip, task.split_steps(slip)) == 3
    # a wrong answer line belongs to the last step (the splitter joins the `####` tail to it)
    wrong_answer = GOOD_A.replace("#### 41", "#### 40")
    assert task.first_wrong_step(ROW, wrong_answer) == len(task.split_steps(wrong_answer)) - 2 == 4
    assert task.first_wrong_step(ROW, "\n12+8=20\n20-5=15\n") == 0
    assert task.first_wrong_step(ROW, GOOD_B) is None


def test_response_without_answer_has_no_wrong_line_but_is_not_correct():
    unfinished = "\n12+7=19\n19-5=14\n14*3=42\n"
    assert first_wrong_line(ROW, unfinished) is None
    assert not get_task("chain").is_correct(unfinished, ROW)


def test_next_step_order():
    prefix = "\n12+7=19\n"
    steps = ["19-5=14\n", "19-5=15\n", "19*3=57\n", "5-19=14\n"]
    assert [next_step_is_correct(ROW, prefix, s) for s in steps] == [True, False, False, False]
    assert oracle_step_pairs(ROW, prefix, steps) == [(0, 1), (0, 2), (0, 3)]
    # both spellings of a commutative step are correct: no order between them
    two = ["14*3=42\n", "3*14=42\n", "3*14=43\n"]
    assert oracle_step_pairs(ROW, "\n12+7=19\n19-5=14\n", two) == [(0, 2), (1, 2)]
    # from a state that is already wrong, no next step can be told apart
    assert next_step_is_correct(ROW, "\n12+7=20\n", "20-5=15\n") is None
    assert oracle_step_pairs(ROW, "\n12+7=20\n", steps) == []


# ----------------------------------------------------------------------------- the generator


def test_generator_lengths_spellings_and_gold():
    task = get_task("chain")
    rows = generate_chain_problems(400, seed=3, min_ops=5, max_ops=7)
    lengths = set()
    first_operand_is_value = {True: 0, False: 0}
    for r in rows:
        start, ops = chain_key(r)
        lengths.add(len(ops))
        assert task.is_correct(r["answer"], r) and task.is_correct(task.sft_target(r), r)
        assert first_wrong_line(r, r["answer"]) is None
        value = start
        for line, op in zip(r["answer"].split("\n"), ops):
            m = LINE.fullmatch(line)
            assert m and line in spellings(value, op)
            if op[0] in "+*" and op[1] != value:
                first_operand_is_value[int(m[1]) == value] += 1
            value = value + op[1] if op[0] == "+" else value - op[1] if op[0] == "-" else value * op[1]
            assert value >= 1
        assert task.gold_answer(r) == str(value)
    assert lengths == {5, 6, 7}
    # both spellings are written, about half each
    total = sum(first_operand_is_value.values())
    assert 0.4 < first_operand_is_value[True] / total < 0.6, first_operand_is_value


def test_two_renderings_of_one_computation_differ_in_text():
    key = KEY
    answers = {render_chain(key, random.Random(i))["answer"] for i in range(20)}
    assert len(answers) > 4  # three commutative lines: up to 8 spellings
    assert all(chain_key({"question": ROW["question"], "answer": a}) == key for a in answers)


def test_splits_disjoint_deterministic_and_sized():
    train, test = make_chain_splits(3000, 200, seed=0, min_ops=6, max_ops=8)
    assert len(train) == 3000 and len(test) == 200
    train_keys, test_keys = {chain_key(r) for r in train}, {chain_key(r) for r in test}
    assert len(train_keys) == 3000 and len(test_keys) == 200 and not train_keys & test_keys
    assert all(6 <= len(chain_key(r)[1]) <= 8 for r in train + test)
    assert make_chain_splits(3000, 200, seed=0, min_ops=6, max_ops=8) == (train, test)
    assert make_chain_splits(10, 200, seed=0, min_ops=6, max_ops=8)[1] == test
    assert make_chain_splits(10, 20, seed=1, min_ops=6, max_ops=8)[1] != test[:20]
    short_train, short_test = make_chain_splits(500, 50, seed=0, min_ops=1, max_ops=2)
    assert {len(chain_key(r)[1]) for r in short_train + short_test} == {1, 2}
    with pytest.raises(ValueError, match="min_ops"):
        generate_chain_problems(3, min_ops=4, max_ops=3)


# ----------------------------------------------------------------------------- the long-chain demo


def test_demo_chain_config_loads():
    from vineppo.demo import load_demo_config

    dc = load_demo_config(CHAIN_CONFIG)
    assert dc.train.data.task == "chain" and dc.demo.data.task == "chain"
    assert (dc.demo.data.min_ops, dc.demo.data.max_ops) == (5, 7)
    assert dc.train.probe.every > 0 and dc.train.probe.states > 0 and dc.train.probe.k > 0
    assert dc.demo.control.enabled and (dc.demo.control.min_ops, dc.demo.control.max_ops) == (1, 2)
    assert set(dc.demo.algorithms) == {"vineppo", "ppo", "grpo"}
    # the greedy SFT-stop check and evaluation leave room for a whole long chain
    assert dc.demo.sft_stop.max_new_tokens == dc.demo.eval.max_new_tokens == dc.train.sampling.max_new_tokens
    # configs/demo.yaml is unchanged: arithmetic, no control
    default = load_demo_config()
    assert default.train.data.task == "arithmetic" and default.demo.data.task == "arithmetic"
    assert not default.demo.control.enabled and default.demo.sft_stop.max_new_tokens == 64


def test_demo_config_rejects_inconsistent_task():
    from vineppo.config import ConfigError
    from vineppo.demo import load_demo_config

    with pytest.raises(ConfigError, match="demo.data.task"):
        load_demo_config(CHAIN_CONFIG, ["data.task=arithmetic"])
    with pytest.raises(ConfigError, match="demo.control needs"):
        load_demo_config(None, ["demo.control.enabled=true"])
    with pytest.raises(ConfigError, match="min_ops"):
        load_demo_config(CHAIN_CONFIG, ["demo.data.min_ops=9"])


def test_demo_data_generation_knows_the_task(tmp_path):
    """The demo writes the task's problems: long chains in DIR/data, short ones in DIR/control/data;
    the arithmetic demo's problems are unchanged."""
    from vineppo.demo import load_demo_config
    from vineppo.demo.data import prepare_data
    from vineppo.tasks.arithmetic import make_splits

    dc = load_demo_config(CHAIN_CONFIG, ["demo.data.train_problems=300", "demo.data.test_problems=20",
                                         "demo.control.train_problems=60", "demo.control.test_problems=10",
                                         "data.validation_size=10"])
    main = prepare_data(dc.demo, dc.train, tmp_path)
    ctrl = prepare_data(dc.demo, dc.train, tmp_path, control=True)
    assert main.data_dir == tmp_path / "data" and ctrl.data_dir == tmp_path / "control" / "data"
    assert {len(chain_key(r)[1]) for r in main.train_rows + main.test_rows} <= {5, 6, 7}
    assert {len(chain_key(r)[1]) for r in ctrl.train_rows + ctrl.test_rows} <= {1, 2}
    assert len(main.rl_rows) == 290 and len(main.val_rows) == 10 and len(ctrl.test_rows) == 10
    assert set(main.splits) == {"test", "validation"}
    arith = load_demo_config(None, ["demo.data.train_problems=50", "demo.data.test_problems=5", "data.validation_size=5"])
    d = prepare_data(arith.demo, arith.train, tmp_path / "arith")
    assert (d.train_rows, d.test_rows) == make_splits(50, 5, 0)


def test_demo_cli_config_flag(tmp_path, monkeypatch):
    """`vineppo demo --config FILE` passes FILE to the demo; a missing file is a config error."""
    import vineppo.demo
    from vineppo.cli import main

    seen = {}
    monkeypatch.setattr(vineppo.demo, "run_demo", lambda out, **kw: seen.update(out=out, **kw))
    assert main(["demo", "--config", str(CHAIN_CONFIG), "--output-dir", str(tmp_path / "o"), "iterations=3"]) == 0
    assert seen["config_path"] == str(CHAIN_CONFIG) and seen["overrides"] == ["iterations=3"]
    monkeypatch.undo()
    with pytest.raises(SystemExit) as e:
        main(["demo", "--config", str(tmp_path / "nope.yaml"), "--output-dir", str(tmp_path / "o")])
    assert e.value.code == 2


def test_demo_cli_algorithms_comma_or_space_separated(tmp_path, monkeypatch, capsys):
    """`--algorithms vineppo ppo` means what `--algorithms vineppo,ppo` means, with the overrides
    before or after it; a bare word among the overrides is an error naming it; an unknown method is
    the config's error, before any work."""
    import vineppo.demo
    from vineppo.cli import main

    seen = {}
    monkeypatch.setattr(vineppo.demo, "run_demo", lambda out, **kw: seen.update(out=out, **kw))
    out = ["--output-dir", str(tmp_path / "o")]
    for argv in (["--algorithms", "vineppo,ppo,grpo", "iterations=3", "mc.k=2"],
                 ["--algorithms", "vineppo", "ppo", "grpo", "iterations=3", "mc.k=2"],
                 ["--algorithms", "vineppo,", "ppo,grpo", "iterations=3", "mc.k=2"],
                 ["iterations=3", "--algorithms", "vineppo", "ppo", "grpo", "mc.k=2"],
                 ["iterations=3", "mc.k=2", "--algorithms", "vineppo", "ppo", "grpo", "--seeds", "2"]):
        assert main(["demo", *out, *argv]) == 0
        assert seen["algorithms"] == ["vineppo", "ppo", "grpo"], argv
        assert seen["overrides"] == ["iterations=3", "mc.k=2"], argv
    assert main(["demo", *out, "iterations=3"]) == 0
    assert seen["algorithms"] is None and seen["overrides"] == ["iterations=3"]
    assert main(["demo", *out, "--algorithms", "demo.algorithms=[grpo,rloo]"]) == 0  # an override, commas kept
    assert seen["algorithms"] is None and seen["overrides"] == ["demo.algorithms=[grpo,rloo]"]
    seen.clear()
    with pytest.raises(SystemExit) as e:
        main(["demo", *out, "ppo"])
    assert e.value.code == 2 and not seen
    err = capsys.readouterr().err
    assert "'ppo'" in err and "--algorithms vineppo,ppo,grpo" in err
    monkeypatch.undo()
    with pytest.raises(SystemExit) as e:  # the real run_demo: its config rejects the method first
        main(["demo", *out, "--algorithms", "vineppo", "trpo"])
    assert e.value.code == 2 and "trpo" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_method_summary_keys_by_hand():
    from vineppo.demo.report import method_summary

    runs = {"vineppo": {"algorithm": "vineppo", "seed_index": 0, "test": 0.5, "iteration_seconds": 30.0,
                        "final_iteration": 15},
            "grpo": {"algorithm": "grpo", "seed_index": 0, "test": 0.4, "iteration_seconds": 10.0,
                     "final_iteration": 15}}
    s = method_summary(runs, 1)
    assert s["vineppo"] == 50.0 and s["grpo"] == 40.0 and s["ppo"] is None
    assert s["sd"] == {"vineppo": None, "grpo": None} and s["rl_seconds"] == {"vineppo": 30.0, "grpo": 10.0}
    assert s["vineppo_minus_ppo"] is None and s["seeds"] == 1
    assert s["vineppo_minus_grpo"] == {"mean": 10.0, "sd": None, "n": 1, "values": [10.0]}


@pytest.mark.slow
def test_chain_demo_smoke_with_control(tmp_path):
    """The long-chain demo end to end at toy size: chain problems, the probe on, and the short-chain
    control from the same SFT start, reported under `control` with the main summary's method keys."""
    import json

    from vineppo.demo import SUMMARY_FILE, run_demo

    smoke = ["iterations=2", "save_every=1", "episodes.questions_per_iteration=4", "episodes.samples_per_question=4",
             "mc.k=2", "ppo.minibatch_size=16", "ppo.micro_batch_size=16", "data.validation_size=8",
             "sampling.max_new_tokens=48", "probe.every=1", "probe.states=4", "probe.k=2", "engine.backend=hf",
             "demo.data.train_problems=200", "demo.data.test_problems=6", "demo.sft.max_steps=4",
             "demo.sft.batch_size=16", "demo.sft.micro_batch_size=16", "demo.model.num_layers=1",
             "demo.model.intermediate_size=128", "demo.eval.n_samples=2", "demo.eval.max_new_tokens=48",
             "demo.torch_threads=1", "demo.sft_stop.validation_pass=null", "demo.control.train_problems=40",
             "demo.control.test_problems=6"]
    out = tmp_path / "demo"
    res = run_demo(out, config_path=CHAIN_CONFIG, overrides=smoke, cache_dir=tmp_path / "cache",
                   algorithms=["vineppo", "grpo"])
    summary = json.loads((out / SUMMARY_FILE).read_text())
    control = summary["control"]
    assert {"sft", "vineppo", "ppo", "grpo", "sd", "rl_seconds", "vineppo_minus_ppo", "seeds"} <= set(control)
    assert control["ppo"] is None and control["rl_seconds"]["vineppo"] > 0 and (control["min_ops"], control["max_ops"]) == (1, 2)
    assert {"sft", "vineppo", "grpo", "sd", "rl_seconds", "seeds"} <= set(summary)
    # the value panel: VinePPO's MC values were probed at both iterations; no PPO run, no critic
    probe = summary["probe"]
    assert probe["iterations"] == [1, 2] and probe["mc_abs_error"] is not None and probe["critic_abs_error"] is None
    assert probe["ranking_against"] in ("oracle", "rollouts") and probe["mc_states"] > 0
    assert probe["mc_error_by_step"] and all(k.isdigit() for k in probe["mc_error_by_step"])  # JSON keys
    assert (out / "demo_values.png").is_file() and control["probe"]["iterations"] == [1, 2]
    # one SFT start: trained on the main and the control train problems (minus the validation carves)
    assert res["details"]["sft"]["rows"] == (200 - 8) + (40 - 8)
    for algo in ("vineppo", "grpo"):
        main_cfg = (out / "runs" / f"{algo}.config.yaml").read_text()
        ctrl_cfg = (out / "control" / "runs" / f"{algo}.config.yaml").read_text()
        assert "task: chain" in main_cfg and str(out / "control" / "data") in ctrl_cfg
        results = out / "control" / "runs" / algo / "checkpoints" / "iter_000002" / "eval" / "test" / "results.json"
        assert control[algo] == round(100 * json.loads(results.read_text())["pass@1"], 2)
        metrics = [json.loads(l) for l in (out / "runs" / algo / "metrics.jsonl").read_text().splitlines()]
        assert all("probe/states" in m for m in metrics)  # the probe ran every iteration
    rows = [json.loads(l) for l in (out / "control" / "data" / "test.jsonl").read_text().splitlines()]
    assert {len(chain_key(r)[1]) for r in rows} <= {1, 2}
    # by chain length: the control's lengths and the main runs' in separate segments; over a
    # group's lengths, the per-length pass@1 weighted by its problems is the group's pass@1
    by_ops = summary["by_ops"]
    assert (out / "demo_by_ops.png").is_file() and by_ops["segments"][1] == sorted({len(chain_key(r)[1]) for r in rows})
    for group, seg in ((summary, by_ops["segments"][0]), (control, by_ops["segments"][1])):
        for algo in ("vineppo", "grpo"):
            n = sum(by_ops["problems"][str(k)] for k in seg)
            weighted = sum(by_ops["methods"][algo][str(k)]["mean"] * by_ops["problems"][str(k)] for k in seg) / n
            assert weighted == pytest.approx(group[algo], abs=0.02)
        assert sum(by_ops["sft"][str(k)] * by_ops["problems"][str(k)] for k in seg) / n == pytest.approx(group["sft"], abs=0.02)
