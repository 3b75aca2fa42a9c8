"""Chat prompts, \\boxed answers, <think> handling, custom data fields and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl
from vineppo.config import DataConfig, PromptConfig, load_config
from vineppo.data import DataError, load_rows
from vineppo.prompting import (PromptBuilder, chat_messages, end_of_turn_token, generation_prompt, make_task,
                               use_end_of_turn_as_eos)
from vineppo.tasks.boxed import extract_boxed
from vineppo.tasks.custom import CustomFieldsTask, MissingSolutionError
from vineppo.tasks.gsm8k import GSM8KTask
from vineppo.tasks.thinking import ThinkingTask

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gsm8k_rows(shared_data_dir):
    return read_jsonl(shared_data_dir / "gsm8k" / "test.jsonl", 40)


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_texts):
    from vineppo.tiny import build_tokenizer

    return build_tokenizer(tiny_texts[:200], 400, chat=True)


# ---------------------------------------------------------------- prompts


def test_chat_prompt_equals_apply_chat_template(chat_tokenizer, gsm8k_rows):
    cfg = PromptConfig(chat=True, system="Be brief.", instruction="Put the answer in \\boxed{}.")
    task = GSM8KTask()
    builder = PromptBuilder(chat_tokenizer, task, cfg)
    for row in gsm8k_rows[:5]:
        messages = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": row["question"].strip() + "\n\nPut the answer in \\boxed{}."}]
        expected = chat_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        expected = expected["input_ids"] if hasattr(expected, "keys") else expected
        assert builder.ids(row) == list(expected)
        text = chat_tokenizer.decode(builder.ids(row))
        assert text == builder.text(row)
        assert text.endswith("<|im_start|>assistant\n") and "[MATH_TASK]" not in text


def test_instruction_position_and_empty_instruction():
    cfg = PromptConfig(chat=True, instruction="Think.", instruction_after_question=False)
    assert chat_messages("Q?", cfg) == [{"role": "user", "content": "Think.\n\nQ?"}]
    assert chat_messages("Q?", PromptConfig(chat=True, instruction="")) == [{"role": "user", "content": "Q?"}]


def test_paper_prompt_stays_the_default(chat_tokenizer, gsm8k_rows):
    task = GSM8KTask()
    ids = PromptBuilder(chat_tokenizer, task).ids(gsm8k_rows[0])
    assert chat_tokenizer.decode(ids).startswith("<s>[MATH_TASK] Problem:\n")


def test_chat_without_template_is_a_config_error(tiny_tokenizer):
    from vineppo.config import ConfigError

    with pytest.raises(ConfigError, match="no chat template"):
        PromptBuilder(tiny_tokenizer, GSM8KTask(), PromptConfig(chat=True))


def test_end_of_turn_token_becomes_eos(tiny_texts):
    from vineppo.tiny import build_tokenizer

    tok = build_tokenizer(tiny_texts[:50], 300, chat=True)
    assert generation_prompt(tok) == "<|im_start|>assistant\n"
    assert end_of_turn_token(tok) == "<|im_end|>"
    tok.eos_token = "</s>"  # a base model's tokenizer: EOS is not the end of a turn
    use_end_of_turn_as_eos(tok)
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


# ---------------------------------------------------------------- answers


def test_boxed_and_hashes_graded_on_real_gsm8k_rows(gsm8k_rows):
    hashes, boxed, auto = GSM8KTask(), GSM8KTask(answer_format="boxed"), GSM8KTask(answer_format="auto")
    for row in gsm8k_rows:
        gold = hashes.gold_answer(row)
        wrong = str(int(gold.replace(",", "")) + 1)
        body = hashes.gold_solution(row).rsplit("\n####", 1)[0]
        with_hashes = f"{body}\n#### {gold}"
        with_boxed = f"{body}\nThe answer is $\\boxed{{{gold}}}$."
        assert hashes.is_correct(with_hashes, row) and not hashes.is_correct(with_boxed, row)
        assert boxed.is_correct(with_boxed, row) and not boxed.is_correct(with_hashes, row)
        assert auto.is_correct(with_boxed, row) and auto.is_correct(with_hashes, row)
        assert not boxed.is_correct(f"{body}\n\\boxed{{{wrong}}}", row)
        # the last box counts, as the last #### does
        assert not boxed.is_correct(f"\\boxed{{{gold}}} no, \\boxed{{{wrong}}}", row)
        assert auto.is_correct(f"#### {wrong}\nActually \\boxed{{{gold}}}", row)
    row = gsm8k_rows[0]
    gold = hashes.gold_answer(row)
    for decorated in (f"\\boxed{{\\${gold}}}", f"\\boxed{{{gold}.}}", f"\\boxed{{\\text{{{gold}}}}}", f"\\boxed {gold}"):
        assert boxed.is_correct(decorated, row), decorated


def test_extract_boxed_matches_braces():
    assert extract_boxed("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert extract_boxed("\\boxed{1} then \\boxed{22}") == "22"
    assert extract_boxed("\\boxed{12") is None
    assert extract_boxed("no box") is None


def test_math_task_rejects_answer_format():
    from vineppo.config import ConfigError

    with pytest.raises(ConfigError):
        make_task(DataConfig(task="math", answer_format="boxed"))


# ---------------------------------------------------------------- <think>


@pytest.fixture
def think_task():
    return ThinkingTask(GSM8KTask(answer_format="boxed"))


ROW = {"question": "q", "answer": "x\n#### 18"}


def test_think_closed_answer_after(think_task):
    r = "<think>\n6 + 6 = 12\n12 + 6 = 18\n</think>\nThe answer is \\boxed{18}."
    assert think_task.extract_answer(r) == "18" and think_task.is_correct(r, ROW)
    o = think_task.split_steps(r)
    steps = [r[a:b] for a, b in zip(o, o[1:])]
    assert "".join(steps) == r
    assert steps == ["<think>\n6 + 6 = 12", "\n12 + 6 = 18", "\n</think>\nThe answer is \\boxed{18}."]


def test_think_answer_inside_only_is_no_answer(think_task):
    r = "<think>\nso \\boxed{18}\n</think>\nI am done."
    assert think_task.extract_answer(r) is None and not think_task.is_correct(r, ROW)
    # inside AND after: only the one after counts
    assert think_task.is_correct("<think>\\boxed{17}</think>\\boxed{18}", ROW)
    assert not think_task.is_correct("<think>\\boxed{18}</think>\\boxed{17}", ROW)


def test_think_unclosed_has_no_answer(think_task):
    r = "<think>\n6 + 12 = 18\n\\boxed{18}"
    assert think_task.extract_answer(r) is None and not think_task.is_correct(r, ROW)
    o = think_task.split_steps(r)
    assert [r[a:b] for a, b in zip(o, o[1:])] == ["<think>\n6 + 12 = 18", "\n\\boxed{18}"]  # reasoning steps
    assert think_task.grade_many([r, "<think>a</think>\\boxed{18}"], [ROW, ROW]) == [False, True]


def test_think_opened_by_the_template():
    task = ThinkingTask(GSM8KTask(answer_format="boxed"), opened_in_prompt=True)
    assert task.is_correct("\n6+12=18\n</think>\n\\boxed{18}", ROW)
    assert not task.is_correct("\n6+12=18\n\\boxed{18}", ROW)  # never closed
    r = "\nA\nB\n</think>\n\\boxed{18}"
    o = task.split_steps(r)
    assert [r[a:b] for a, b in zip(o, o[1:])] == ["\nA", "\nB", "\n</think>\n\\boxed{18}"]
    assert task.split_steps("</think>\\boxed{18}") == [0, len("</think>\\boxed{18}")]
    plain = ThinkingTask(GSM8KTask(answer_format="boxed"))
    assert plain.is_correct("6+12=18\n\\boxed{18}", ROW)  # no block at all: the whole response


# ---------------------------------------------------------------- custom data


def _write(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


@pytest.fixture
def custom_dir(tmp_path, gsm8k_rows):
    rows = [{"prompt_text": r["question"], "target": r["answer"].rsplit("####", 1)[1].strip()} for r in gsm8k_rows]
    _write(tmp_path / "train.jsonl", rows)
    _write(tmp_path / "test.jsonl", rows[:5])
    return tmp_path


def test_custom_field_names(custom_dir, gsm8k_rows):
    data = DataConfig(task="gsm8k", source=str(custom_dir), question_field="prompt_text", answer_field="target",
                      answer_format="boxed")
    task = make_task(data)
    assert isinstance(task, CustomFieldsTask)
    test = load_rows("gsm8k", "test", data.source, task=task)
    train = load_rows("gsm8k", "train", data.source, task=task)
    assert len(test) == 5 and len(train) == 40 - 4  # validation: a tenth of a small custom train file
    row, orig = test[0], gsm8k_rows[0]
    assert task.query(row) == orig["question"].strip()
    assert task.prompt(row) == GSM8KTask().prompt(orig)
    gold = GSM8KTask().gold_answer(orig)
    assert task.gold_answer(row) == gold
    assert task.is_correct(f"so \\boxed{{{gold}}}", row) and not task.is_correct(f"#### {gold}", row)
    with pytest.raises(MissingSolutionError, match="solution_field"):
        task.sft_target(row)


def test_custom_solution_field_serves_sft(tmp_path, gsm8k_rows):
    rows = [{"q": r["question"], "sol": r["answer"]} for r in gsm8k_rows[:10]]
    _write(tmp_path / "train.jsonl", rows)
    task = make_task(DataConfig(task="gsm8k", question_field="q", solution_field="sol"))
    got = load_rows("gsm8k", "train", str(tmp_path), task=task)
    assert task.sft_target(got[0]) == "\n" + got[0]["sol"] + "\n"
    assert task.is_correct(got[0]["sol"], got[0])


def test_numeric_answer_field():
    task = make_task(DataConfig(question_field="q", answer_field="a"))
    row = {"q": "How many?", "a": 18}
    task.validate_row(row)
    assert task.gold_answer(row) == "18" and task.is_correct("#### 18", row)


def test_custom_math_answer_field():
    task = make_task(DataConfig(task="math", question_field="q", answer_field="a"))
    row = {"q": "What is 1/2 + 1/2?", "a": "1"}
    assert task.gold_answer(row) == "1"
    assert task.is_correct("So $\\boxed{1}$.", row) and not task.is_correct("$\\boxed{2}$", row)


@pytest.mark.parametrize("bad,problem", [
    ({"prompt_text": "What?"}, "'target' is missing"),
    ({"prompt_text": "What?", "target": "  "}, "'target' is empty"),
    ({"prompt_text": 7, "target": "1"}, "'prompt_text' must be a string"),
    ({"prompt_text": "What?", "target": [1]}, "'target' must be a string or a number"),
])
def test_malformed_custom_row_names_file_line_field(custom_dir, bad, problem):
    lines = (custom_dir / "train.jsonl").read_text().splitlines()
    lines.insert(5, json.dumps(bad))
    (custom_dir / "train.jsonl").write_text("\n".join(lines) + "\n")
    task = make_task(DataConfig(question_field="prompt_text", answer_field="target"))
    with pytest.raises(DataError) as e:
        load_rows("gsm8k", "train", str(custom_dir), task=task)
    msg = str(e.value)
    assert "train.jsonl, line 6" in msg and problem in msg and e.value.line == 6


def test_hub_dataset_id_goes_through_load_dataset(monkeypatch):
    import vineppo.data as data

    seen = []

    def fake_hub(path, name, split):
        seen.append((path, name, split))
        return [{"prompt": f"Question {i}?", "final": str(i)} for i in range(30)]

    monkeypatch.setattr(data, "_hub", fake_hub)
    task = make_task(DataConfig(question_field="prompt", answer_field="final"))
    rows = load_rows("gsm8k", "test", "someone/my-math-set", task=task)
    assert seen == [("someone/my-math-set", None, "test")] and len(rows) == 30
    assert task.is_correct("#### 7", rows[7])
    monkeypatch.setattr(data, "_hub", lambda *a: [{"prompt": "Q", "final": ""}])
    with pytest.raises(DataError, match="someone/my-math-set.*row index 0.*'final' is empty"):
        load_rows("gsm8k", "test", "someone/my-math-set", task=task)


def test_config_needs_an_answer_or_solution_field():
    from vineppo.config import ConfigError

    with pytest.raises(ConfigError, match="answer_field"):
        load_config(REPO / "configs/tiny/gsm8k_chat_vineppo.yaml", ["data.question_field=q"])


def test_cli_train_malformed_row_is_one_line(custom_dir, tmp_path):
    lines = (custom_dir / "train.jsonl").read_text().splitlines()
    lines[6] = '{"prompt_text": "broken'
    (custom_dir / "train.jsonl").write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "vineppo", "train", "--config", "configs/tiny/gsm8k_chat_vineppo.yaml",
         "--output-dir", str(tmp_path / "run"), f"data.source={custom_dir}", "data.question_field=prompt_text",
         "data.answer_field=target", f"model.name_or_path={tmp_path / 'model'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    err = [l for l in proc.stderr.splitlines() if "vineppo train" in l]
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "train.jsonl, line 7" in err[0] and "invalid JSON" in err[0]


def test_think_steps_always_partition_the_response():
    import random

    rng = random.Random(0)
    pieces = ["<think>", "</think>", "\n", "\n\n", " ", "a", "12", "\\boxed{3}", "#### 4"]
    for opened in (False, True):
        task = ThinkingTask(GSM8KTask(answer_format="auto"), opened_in_prompt=opened)
        for _ in range(500):
            r = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
            o = task.split_steps(r)
            assert o[0] == 0 and o[-1] == len(r) and all(a <= b for a, b in zip(o, o[1:])), (r, o)


@pytest.mark.slow
@pytest.mark.vllm
def test_done_when_command_with_vllm(tmp_path, gsm8k_rows):
    """A chat model on custom data, end to end on CPU with vLLM."""
    folder = tmp_path / "data"
    folder.mkdir()
    _write(folder / "train.jsonl", [{"prompt_text": r["question"], "target": r["answer"].rsplit("####", 1)[1].strip()}
                                    for r in gsm8k_rows[:20]])
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "vineppo", "train", "--config", "configs/tiny/gsm8k_chat_vineppo.yaml",
         "--output-dir", str(out), "iterations=1", "save_every=1", f"data.source={folder}",
         "data.question_field=prompt_text", "data.answer_field=target", "logging.dump_episodes=true",
         f"model.name_or_path={tmp_path / 'model'}", "engine.backend=vllm", "logging.progress=false"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "checkpoints" / "iter_000001")
    assert tok.chat_template
    suffix = generation_prompt(tok)
    episodes = [json.loads(l) for f in (out / "episodes").glob("*.jsonl") for l in f.read_text().splitlines()]
    assert len(episodes) == 8 * 4
    for e in episodes:
        assert tok.decode(e["prompt_ids"]).endswith(suffix)


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "examples").glob("*.yaml")) +
                         [REPO / "configs/tiny/gsm8k_chat_vineppo.yaml"], ids=lambda p: p.name)
def test_chat_configs_load(path):
    cfg = load_config(path)
    assert cfg.prompt.chat and cfg.sampling.stop == []
    total = cfg.episodes.questions_per_iteration * cfg.episodes.samples_per_question
    assert total % cfg.ppo.minibatch_size == 0


def test_eval_uses_the_runs_chat_prompt_fields_and_answer_format(chat_tokenizer, custom_dir, tmp_path):
    """`vineppo eval` of a chat run: same prompt ids as training, custom fields, \\boxed grading."""
    from vineppo.engine.base import Completion, Engine
    from vineppo.evaluate import data_spec, evaluate_checkpoint

    class Recorder(Engine):
        def __init__(self, answers):
            self.prompts, self.stops, self.answers = [], [], answers

        def generate(self, prompts, sampling, desc=None):
            self.prompts += [list(p) for p in prompts]
            self.stops.append(sampling.stop)
            return [[Completion([5], f"<think>hm</think> \\boxed{{{self.answers[len(self.prompts) - len(prompts) + i]}}}",
                                "stop") for _ in range(sampling.n)] for i in range(len(prompts))]

        def update_weights(self, state_dict):
            pass

    run_cfg = {"data": {"task": "gsm8k", "source": str(custom_dir), "question_field": "prompt_text",
                        "answer_field": "target", "answer_format": "boxed"},
               "prompt": {"chat": True, "system": "S", "instruction": "Box it."}}
    spec = data_spec(run_cfg, task=None, source=None, where="run")
    rows = [json.loads(l) for l in (custom_dir / "test.jsonl").read_text().splitlines()]
    engine = Recorder([r["target"] for r in rows])
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    res = evaluate_checkpoint(model_dir, spec.task, "test", spec=spec, engine=engine, tokenizer=chat_tokenizer,
                              out_dir=tmp_path / "eval", n_samples=2)
    assert res["pass@1"] == 1.0 and res["num_problems"] == 5
    assert engine.stops == [()]
    builder = PromptBuilder(chat_tokenizer, spec.make_task(chat_tokenizer), spec.prompt)
    assert engine.prompts == [builder.ids(r) for r in rows]
    assert chat_tokenizer.decode(engine.prompts[0]).startswith("<s><|im_start|>system\nS<|im_end|>")


def test_sft_without_solution_field_says_so(custom_dir, tmp_path, tiny_model_dir, capsys):
    from vineppo.cli import main

    rc = main(["sft", "--model", str(tiny_model_dir), "--task", "gsm8k", "--output-dir", str(tmp_path / "sft"),
               "--data-source", str(custom_dir), "--question-field", "prompt_text", "--answer-field", "target"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--solution-field" in err[0] and "worked solutions" in err[0]


def test_sft_on_custom_solution_field(tmp_path, gsm8k_rows, tiny_model_dir):
    from transformers import AutoTokenizer

    from vineppo.sft import sft_examples
    from vineppo.tasks import get_task

    _write(tmp_path / "train.jsonl", [{"q": r["question"], "sol": r["answer"]} for r in gsm8k_rows[:10]])
    task = CustomFieldsTask(get_task("gsm8k"), "q", None, "sol")
    rows = load_rows("gsm8k", "train", str(tmp_path), task=task)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = sft_examples(task, tok, rows, 2048)
    ids, n_prompt = ex[0]
    assert tok.decode(ids[n_prompt:], skip_special_tokens=True) == "\n" + rows[0]["sol"] + "\n"
