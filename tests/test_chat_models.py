"""Chat-model details on the two common template shapes, built locally.

- ChatML (Qwen-like): `<|im_start|>role\\n...<|im_end|>`, with a system turn; stops on `<|im_end|>`
  and `</s>`.
- Header style (Llama-3-like): `<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>`, several
  end ids (`<|eot_id|>`, `<|end_of_text|>`; the tokenizer's EOS is `<|end_of_text|>`), and a
  generation prompt that opens `<think>` (R1-like).
Each goes through prompt building, the EOS an episode trains, SFT formatting and evaluation.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from vineppo.config import DataConfig, PromptConfig
from vineppo.engine.base import Completion, Engine, SamplingParams, cut_generation, ending_token, stop_token_ids
from vineppo.episodes import generate_episodes
from vineppo.prompting import PromptBuilder, end_of_turn_id, end_of_turn_token, make_task, use_end_of_turn_as_eos
from vineppo.sft import sft_examples
from vineppo.tasks.thinking import ThinkingTask
from vineppo.trainer import collate

ROW = {"question": "Tom has 4 apples and buys 3 more. How many?", "answer": "4 + 3 = <<4+3=7>>7\n#### 7"}
SOLUTION = "4 + 3 = 7\n#### 7"  # the gold solution: calculator annotations removed

HEADER_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n{% endif %}"
)


@pytest.fixture(scope="module")
def chatml(tiny_texts):
    """ChatML tokenizer (EOS `<|im_end|>`) and the stop ids of its generation config."""
    from vineppo.tiny import build_tokenizer

    tok = build_tokenizer(tiny_texts[:200], 400, chat=True)
    return tok, [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("</s>")]


@pytest.fixture(scope="module")
def header(tiny_texts):
    """Header-style tokenizer: EOS `<|end_of_text|>`, turns end with `<|eot_id|>`, prompt opens `<think>`."""
    from vineppo.tiny import build_tokenizer

    tok = build_tokenizer(tiny_texts[:200], 400)
    tok.add_special_tokens({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
                            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    tok.add_tokens(["<think>", "</think>"])
    tok.chat_template = HEADER_TEMPLATE
    return tok, [tok.convert_tokens_to_ids("<|eot_id|>"), tok.convert_tokens_to_ids("<|end_of_text|>")]


CFG = PromptConfig(chat=True, system="You are a careful solver.", instruction="Finish with #### N.")


def test_prompts_follow_each_template(chatml, header):
    for tok, opens in ((chatml[0], False), (header[0], True)):
        task = make_task(DataConfig(task="gsm8k"), CFG, tok)
        builder = PromptBuilder(tok, task, CFG)
        messages = [{"role": "system", "content": CFG.system},
                    {"role": "user", "content": ROW["question"] + "\n\nFinish with #### N."}]
        expected = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        expected = expected["input_ids"] if hasattr(expected, "keys") else expected
        assert builder.ids(ROW) == list(expected)
        assert isinstance(task, ThinkingTask) and task.opened_in_prompt is opens
        assert builder.opens_reasoning() is opens
    text = PromptBuilder(header[0], make_task(DataConfig(task="gsm8k")), CFG).text(ROW)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a careful")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n")
    assert PromptBuilder(chatml[0], make_task(DataConfig(task="gsm8k")), CFG).text(ROW).startswith(
        "<s><|im_start|>system\nYou are a careful solver.<|im_end|>")


def test_end_of_turn_token_of_each_template(chatml, header):
    assert end_of_turn_token(chatml[0]) == "<|im_end|>" and end_of_turn_token(header[0]) == "<|eot_id|>"
    tok = copy.deepcopy(header[0])
    assert tok.eos_token == "<|end_of_text|>"
    use_end_of_turn_as_eos(tok)
    assert tok.eos_token == "<|eot_id|>" and end_of_turn_id(header[0]) == header[1][0]


def test_stop_ids_and_the_ending_token(header):
    tok, (eot, end) = header
    ids = stop_token_ids(tok, [eot, end])
    assert ids == {eot, end}
    decode = tok.decode
    a, b = tok("4 + 3", add_special_tokens=False)["input_ids"][:2]
    # HF: the first of any stop id ends it (padding after); vLLM: the stop id is the last token
    for raw, stop_at in (([a, b, eot, end, end], eot), ([a, b, end], end)):
        kept, _, ended = cut_generation(raw, ids, decode, ())
        assert kept == [a, b] and ended and ending_token(raw, kept, ids) == stop_at
    # a stop string or the length limit: no ending token
    kept, text, ended = cut_generation([a, b], ids, decode, (decode([b]),))
    assert ended and kept == [a] and ending_token([a, b], kept, ids) is None
    assert ending_token([a, b], [a, b], ids) is None


def _always(model, token_id: int):
    """A copy of `model` whose next token is always `token_id` (constant logits via a biased head)."""
    m = copy.deepcopy(model)
    head = torch.nn.Linear(m.lm_head.in_features, m.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-50.0)
        head.bias[token_id] = 50.0
    m.lm_head = head
    return m


def test_hf_engine_stops_on_any_generation_config_id_and_reports_it(header):
    from vineppo.engine.hf import HFEngine
    from vineppo.tiny import TinyModelConfig, build_model

    tok, (eot, end) = header
    base = build_model(tok, TinyModelConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128))
    base.generation_config.eos_token_id = [eot, end]
    prompt = PromptBuilder(tok, make_task(DataConfig(task="gsm8k")), CFG).ids(ROW)
    for stop_id in (eot, end):
        engine = HFEngine(_always(base, stop_id), tok, progress=False)
        (c,), = engine.generate([prompt], SamplingParams(temperature=0, max_new_tokens=4))
        assert (c.token_ids, c.finish_reason, c.stop_token_id) == ([], "stop", stop_id)


class Scripted(Engine):
    """Returns fixed completions; records the prompts it was given."""

    def __init__(self, completions):
        self.completions, self.prompts = completions, []

    def generate(self, prompts, sampling, desc=None):
        self.prompts += [list(p) for p in prompts]
        return [[copy.deepcopy(c) for c in self.completions[:sampling.n]] for _ in prompts]

    def update_weights(self, state_dict):
        pass


def test_episode_trains_the_token_that_ended_it(header, chatml):
    for tok, stop_ids in (header, chatml):
        task = make_task(DataConfig(task="gsm8k"), CFG, tok)
        builder = PromptBuilder(tok, task, CFG)
        answer = "4 + 3 = 7\n</think>\n\n#### 7" if builder.opens_reasoning() else "4 + 3 = 7\n#### 7"
        resp = tok(answer, add_special_tokens=False)["input_ids"]
        # the second stop id (`<|end_of_text|>` / `</s>`) ended the first sample, the first the second
        done = [Completion(resp, tok.decode(resp), "stop", stop_token_id=stop_ids[1]),
                Completion(resp, tok.decode(resp), "stop", stop_token_id=stop_ids[0]),
                Completion(resp, tok.decode(resp), "length")]
        eps, _ = generate_episodes(Scripted(done), task, tok, [ROW], [0], samples_per_question=3, temperature=1.0,
                                   top_p=1.0, max_new_tokens=64, max_sequence_length=512, stop=(), seed=0,
                                   prompt_ids=builder.ids)
        assert [e.reward for e in eps] == [1.0, 1.0, 0.0]
        fallback = tok.eos_token_id
        assert [e.action_ids(fallback)[len(resp):] for e in eps] == [[stop_ids[1]], [stop_ids[0]], []]
        batch = collate(eps[:2], fallback, 0, "cpu")
        for i, end in enumerate(stop_ids[::-1]):
            row = batch.input_ids[i].tolist()
            assert row[len(eps[i].prompt_ids) + len(resp)] == end  # the trained last action


def test_sft_formats_each_template(chatml, header):
    from vineppo.tasks.gsm8k import GSM8KTask

    tok = chatml[0]
    (ids, p), = sft_examples(GSM8KTask(), tok, [ROW], 512, prompt=CFG)
    full = tok.apply_chat_template(PromptBuilder(tok, GSM8KTask(), CFG).messages(ROW)
                                   + [{"role": "assistant", "content": SOLUTION}], tokenize=False)
    # the template's own rendering of the conversation, up to and including the end-of-turn token
    assert tok.decode(ids) == full[: full.rindex("<|im_end|>") + len("<|im_end|>")]
    assert ids[-1] == chatml[1][0] and tok.decode(ids[p:]) == SOLUTION + "<|im_end|>"

    tok, (eot, _) = header
    (ids, p), = sft_examples(GSM8KTask(), tok, [ROW], 512, prompt=CFG)
    target = tok.decode(ids[p:-1])
    assert ids[-1] == eot != tok.eos_token_id
    assert target == SOLUTION + "\n</think>\n\n#### 7"
    think = make_task(DataConfig(task="gsm8k"), CFG, tok)
    assert think.has_final_answer(target) and think.is_correct(target, ROW)  # closes the block, then answers
    assert tok.decode(ids[:p]).endswith("<|end_header_id|>\n\n<think>\n")


def test_evaluation_with_each_template(chatml, header, tmp_path):
    from vineppo.evaluate import data_spec, evaluate_checkpoint

    (tmp_path / "data").mkdir()
    import json

    (tmp_path / "data" / "test.jsonl").write_text(json.dumps(ROW) + "\n")
    (tmp_path / "data" / "train.jsonl").write_text(json.dumps(ROW) + "\n")
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    run_cfg = {"data": {"task": "gsm8k", "source": str(tmp_path / "data")},
               "prompt": {"chat": True, "system": CFG.system, "instruction": CFG.instruction}}
    spec = data_spec(run_cfg, task=None, source=None, where="run")
    for name, (tok, stop_ids) in (("chatml", chatml), ("header", header)):
        tok = copy.deepcopy(tok)
        opened = PromptBuilder(tok, make_task(DataConfig(task="gsm8k")), CFG).opens_reasoning()
        right = "4 + 3 = 7\n</think>\n\n#### 7" if opened else "4 + 3 = 7\n#### 7"
        inside = "4 + 3 = 7\n#### 7"  # header: the answer inside an unclosed block does not count
        engine = Scripted([Completion([5], right, "stop", stop_token_id=stop_ids[0]),
                           Completion([5], inside, "stop", stop_token_id=stop_ids[1])])
        res = evaluate_checkpoint(model_dir, spec.task, "test", spec=spec, engine=engine, tokenizer=tok,
                                  out_dir=tmp_path / f"eval-{name}", n_samples=2)
        assert res["pass@1"] == (0.5 if opened else 1.0), name
        builder = PromptBuilder(tok, spec.make_task(tok), spec.prompt)
        assert engine.prompts == [builder.ids(ROW)]


def test_vineppo_sft_chat_trains_the_template_and_saves_its_end_of_turn_as_eos(header, tmp_path, one_torch_thread):
    import json

    from transformers import AutoTokenizer

    from vineppo.cli import main
    from vineppo.tiny import TinyModelConfig, build_model

    tok, (eot, end) = header
    base = tmp_path / "base"
    model = build_model(tok, TinyModelConfig(hidden_size=64, num_layers=1, num_heads=2, intermediate_size=128))
    model.generation_config.eos_token_id = [eot, end]
    model.save_pretrained(base)
    tok.save_pretrained(base)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text(json.dumps(ROW) + "\n")
    out = tmp_path / "sft"
    assert main(["sft", "--model", str(base), "--task", "gsm8k", "--output-dir", str(out), "--data-source", str(data),
                 "--validation-size", "0", "--batch-size", "1", "--max-steps", "1", "--max-length", "512",
                 "--chat", "--system", "S"]) == 0
    info = json.loads((out / "sft_info.json").read_text())
    assert info["examples"] == 1 and info["prompt"]["chat"] is True and info["prompt"]["system"] == "S"
    assert info["config"]["target_template"] is None  # chat: the template, not the paper's target
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|eot_id|>"
    # the loss is the one of the chat-formatted example (not of the paper's prompt and target)
    from test_sft_recipe import _per_example_loss_by_hand

    from vineppo.tasks.gsm8k import GSM8KTask

    examples = sft_examples(GSM8KTask(), tok, [ROW], 512, prompt=PromptConfig(chat=True, system="S"))
    assert info["final_loss"] == pytest.approx(_per_example_loss_by_hand(base, examples)[0], rel=1e-4)
