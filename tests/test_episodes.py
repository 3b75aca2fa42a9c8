"""Episodes: which responses are finished (EOS appended and trained) and how they are scored."""

from __future__ import annotations

import pytest

from vineppo.engine.base import Completion, Engine, EngineStats
from vineppo.episodes import episode_metrics, generate_episodes
from vineppo.tasks import get_task


class FixedEngine(Engine):
    """Answers every prompt with the same scripted (text, finish_reason) completions."""

    def __init__(self, tokenizer, completions):
        self.tok = tokenizer
        self.completions = completions
        self.stats = EngineStats()

    def generate(self, prompts, sampling, desc=None):
        out = []
        for _ in prompts:
            row = []
            for text, reason in self.completions[: sampling.n]:
                ids = self.tok(text, add_special_tokens=False)["input_ids"]
                row.append(Completion(list(ids), self.tok.decode(ids), reason))
            out.append(row)
        return out

    def update_weights(self, state_dict):
        pass


def _episodes(tok, task, rows, completions):
    eng = FixedEngine(tok, completions)
    eps, _ = generate_episodes(eng, task, tok, rows, [0], samples_per_question=len(completions), temperature=0.6,
                               top_p=0.9, max_new_tokens=64, max_sequence_length=512, stop=[], seed=1)
    return eps


def test_gsm8k_stopped_without_hashes_is_unfinished_reward_0_and_no_eos(tiny_tokenizer):
    task = get_task("gsm8k")
    rows = [{"question": "Tom has 2 apples and buys 2 more. How many?", "answer": "2 + 2 = 4\n#### 4"}]
    eps = _episodes(tiny_tokenizer, task, rows, [
        ("\n2 + 2 = 4\n#### 4", "stop"),       # finished, right
        ("\n2 + 2 = 4 so 4 apples", "stop"),   # stopped, no `####`: unfinished (official)
        ("\n2 + 2 = 4\n#### 4", "length"),     # cut by max_tokens
    ])
    eos = tiny_tokenizer.eos_token_id
    assert [e.finished for e in eps] == [True, False, False]
    assert [e.reward for e in eps] == [1.0, 0.0, 0.0]
    assert eps[0].action_ids(eos)[-1] == eos
    assert eos not in eps[1].action_ids(eos) and eos not in eps[2].action_ids(eos)
    assert [e.truncated for e in eps] == [False, False, False]
    m = episode_metrics(eps)
    assert m["episodes/finished_frac"] == pytest.approx(1 / 3)
    assert m["episodes/no_answer_frac"] == pytest.approx(1 / 3)


def test_every_stopped_math_response_is_finished(tiny_tokenizer):
    """MATH extraction falls back to the last number / the text and never reports no answer."""
    task = get_task("math")
    rows = [{"problem": "What is 2+2?", "solution": "It is $\\boxed{4}$.", "answer": "4"}]
    eps = _episodes(tiny_tokenizer, task, rows, [("\nThe sum is four.", "stop"), ("\nSo $\\boxed{4}$.", "stop")])
    assert [e.finished for e in eps] == [True, True]
    assert [e.reward for e in eps] == [0.0, 1.0]


def test_an_unclosed_think_block_has_no_final_answer():
    from vineppo.tasks.thinking import ThinkingTask

    for name in ("math", "gsm8k"):
        task = ThinkingTask(get_task(name))
        assert not task.has_final_answer("<think>\nx = 2 + 2 = 4\n#### 4 \\boxed{4}")
        closed = "<think>\nx = 2 + 2\n</think>\n" + ("\\boxed{4}" if name == "math" else "#### 4")
        assert task.has_final_answer(closed)
    assert not ThinkingTask(get_task("gsm8k")).has_final_answer("<think>\nx\n</think>\nit is 4")


@pytest.mark.parametrize("reason", ["stop", "length"])
def test_length_limit_counts_the_eos_of_a_finished_response(tiny_tokenizer, reason):
    """Spec §1.3: query + response (+ the EOS a finished response is trained with) must fit
    `max_sequence_length`. Exactly at the limit a response is kept whole; one token over, it is
    truncated to the limit, scores 0 and gets no EOS. An unfinished response has no EOS to count."""
    from vineppo.tokens import encode_prompt

    task = get_task("gsm8k")
    rows = [{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}]
    text = "\n2 + 2 = 4\n#### 4"
    n_prompt = len(encode_prompt(tiny_tokenizer, task.prompt(rows[0])))
    n_resp = len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
    finished = reason == "stop"
    fits = n_prompt + n_resp + (1 if finished else 0)

    def run(limit):
        eng = FixedEngine(tiny_tokenizer, [(text, reason)])
        eps, _ = generate_episodes(eng, task, tiny_tokenizer, rows, [0], samples_per_question=1, temperature=0.6,
                                   top_p=0.9, max_new_tokens=64, max_sequence_length=limit, stop=[], seed=1)
        return eps[0]

    e = run(fits)
    assert (e.finished, e.truncated, e.reward, len(e.response_ids)) == (finished, False, float(finished), n_resp)
    assert len(e.prompt_ids) + len(e.action_ids(tiny_tokenizer.eos_token_id)) == fits
    e = run(fits - 1)
    assert (e.finished, e.truncated, e.reward) == (False, True, 0.0)
    assert len(e.prompt_ids) + len(e.action_ids(tiny_tokenizer.eos_token_id)) <= fits - 1
    assert len(e.response_ids) < n_resp or not finished
    assert tiny_tokenizer.eos_token_id not in e.action_ids(tiny_tokenizer.eos_token_id)
