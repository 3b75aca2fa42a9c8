"""MC value estimation: states at step starts, token-prefix dedup, one engine call, mean rewards."""

from __future__ import annotations

import pytest

from vineppo.engine.base import Completion, Engine, EngineStats, SamplingParams
from vineppo.episodes import Episode
from vineppo.tasks import get_task
from vineppo.mc import build_mc_requests, estimate_mc_values, mc_state_token_counts


class CharTokenizer:
    """One token per character (ids = code points): enough for the text↔token bookkeeping."""
    eos_token_id = 0

    def decode(self, ids, **kw):
        return "".join(chr(i) for i in ids)


def char_episode(task, q: int, prompt: str, response: str, reward: float = 0.0, j: int = 0) -> Episode:
    ids = [ord(c) for c in response]
    return Episode(question_index=q, sample_index=j, prompt_ids=[ord(c) for c in prompt], response_ids=ids,
                   response_text=response, finished=True, truncated=False, reward=reward,
                   step_boundaries=task.split_steps(response), token_starts=list(range(len(response))))


class ScriptedEngine(Engine):
    """Returns, for every prompt, n copies of a continuation chosen by a function of the prompt."""

    def __init__(self, continuation):
        self.continuation = continuation
        self.calls: list[tuple[list[list[int]], SamplingParams]] = []
        self.stats = EngineStats()

    def generate(self, prompts, sampling, desc=None):
        self.calls.append(([list(p) for p in prompts], sampling))
        out = []
        for p in prompts:
            texts = self.continuation("".join(chr(i) for i in p), sampling.n)
            out.append([Completion([ord(c) for c in t], t, "stop") for t in texts])
        return out

    def update_weights(self, state_dict):
        pass


def test_eight_samples_sharing_a_first_step_give_one_v0_and_one_v1_request():
    task = get_task("gsm8k")
    prompt = "Q: 1+2?\nSolution:"
    episodes = [char_episode(task, 0, prompt, "\nx = 1 + 2\ny = 3\n#### 3", j=j) for j in range(4)]
    episodes += [char_episode(task, 0, prompt, "\nx = 1 + 2\nz = 4\n#### 4", j=j) for j in range(4, 8)]
    requests, per_episode, naive = build_mc_requests(episodes, cap=None)
    # each response has steps ["\nx = 1 + 2", "\ny = 3\n#### 3"] → states s0 (prompt) and s1
    assert all(e.num_steps == 2 for e in episodes)
    assert naive == 16
    assert len(requests) == 2
    assert [len(r.prefix_response_ids) for r in requests] == [0, len("\nx = 1 + 2")]
    assert all(ids == [0, 1] for ids in per_episode)


def test_dedup_across_questions_and_cap():
    task = get_task("gsm8k")
    e1 = char_episode(task, 0, "P0", "\na\nb\nc\nd\n#### 1")
    e2 = char_episode(task, 1, "P1", "\na\nb\nc\nd\n#### 1")  # same response, other question
    assert e1.num_steps == 4
    reqs, per, naive = build_mc_requests([e1, e2], cap=None)
    assert naive == 8 and len(reqs) == 8  # different prompts never merge
    reqs, per, naive = build_mc_requests([e1], cap=1)
    assert [len(r.prefix_response_ids) for r in reqs] == [0, 2]  # s0, s1 (k ≤ cap)
    assert mc_state_token_counts(e1, cap=None) == [0, 2, 4, 6]


def test_state_prefix_follows_the_first_character_rule():
    task = get_task("gsm8k")
    resp = "\nab\ncd\n#### 5"
    e = char_episode(task, 0, "P", resp)
    # merge "b\nc" into one token starting at char 2 (inside step 0): s1 must include it whole
    e.response_ids = [ord("\n"), ord("a"), 9999, ord("d")] + [ord(c) for c in "\n#### 5"]
    e.token_starts = [0, 1, 2, 5] + list(range(6, 6 + len("\n#### 5")))
    assert e.step_boundaries == [0, 3, len(resp)]
    assert mc_state_token_counts(e, None) == [0, 3]  # token 3 ("d", first char 5 ≥ 3) opens step 1


def test_estimate_mc_values_means_of_rewards_in_one_call():
    """Rollouts are graded on prefix + continuation (spec §1.3): from s1 the continuation " 4" is right
    only because s1's prefix ends in "####"; graded alone it has no answer. From s0 it is wrong."""
    task = get_task("gsm8k")
    prompt = "Q\nSolution:"
    episodes = [char_episode(task, 0, prompt, "\nx = 2 ####\ny = 4\n#### 4", j=j) for j in range(3)]
    assert episodes[0].step_boundaries == [0, len("\nx = 2 ####"), len("\nx = 2 ####\ny = 4\n#### 4")]
    rows = [{"question": "Q", "answer": "x\n#### 4"}]

    def cont(prefix_text, n):
        # the same " 4" continuation from both states: right from s1 only
        if prefix_text.endswith("Solution:"):
            return ["\nx = 2\n#### 4", " 4", "no answer"][:n]
        assert prefix_text.endswith("Solution:\nx = 2 ####")
        return [" 4", " 4", " 7"][:n]

    eng = ScriptedEngine(cont)
    stats = estimate_mc_values(eng, task, CharTokenizer(), rows, episodes, k=3, cap=None, temperature=0.6,
                               top_p=0.9, max_new_tokens=32, max_sequence_length=1000, stop=[], seed=1)
    assert len(eng.calls) == 1 and eng.calls[0][1].n == 3
    assert len(eng.calls[0][0]) == 2  # s0 and s1, deduplicated over the 3 samples
    assert stats["mc/unique_states"] == 2 and stats["mc/states"] == 6 and stats["mc/rollouts"] == 6
    for e in episodes:
        assert e.step_values == pytest.approx([1 / 3, 2 / 3])


def test_length_stopped_or_overlong_rollouts_score_zero():
    task = get_task("gsm8k")
    episodes = [char_episode(task, 0, "Q", "\n#### 4")]
    rows = [{"question": "Q", "answer": "x\n#### 4"}]

    class LengthEngine(ScriptedEngine):
        def generate(self, prompts, sampling, desc=None):
            return [[Completion([ord(c) for c in "\n#### 4"], "\n#### 4", "length")] * sampling.n for _ in prompts]

    estimate_mc_values(LengthEngine(None), task, CharTokenizer(), rows, episodes, k=2, cap=None, temperature=0.6,
                       top_p=0.9, max_new_tokens=8, max_sequence_length=1000, stop=[], seed=1)
    assert episodes[0].step_values == [0.0]
    eng = ScriptedEngine(lambda p, n: ["\n#### 4"] * n)
    estimate_mc_values(eng, task, CharTokenizer(), rows, episodes, k=2, cap=None, temperature=0.6,
                       top_p=0.9, max_new_tokens=8, max_sequence_length=5, stop=[], seed=1)
    assert episodes[0].step_values == [0.0]
    estimate_mc_values(eng, task, CharTokenizer(), rows, episodes, k=2, cap=None, temperature=0.6,
                       top_p=0.9, max_new_tokens=8, max_sequence_length=100, stop=[], seed=1)
    assert episodes[0].step_values == [1.0]


def test_rollout_length_limit_counts_the_eos():
    """A right rollout whose prompt + prefix + continuation + EOS is exactly `max_sequence_length`
    scores 1; one token less room and it scores 0 (the EOS does not fit)."""
    task = get_task("gsm8k")
    prompt, response, cont = "Q", "\nx\ny\n#### 4", "\n#### 4"
    episodes = [char_episode(task, 0, prompt, response)]
    rows = [{"question": "Q", "answer": "x\n#### 4"}]
    eng = ScriptedEngine(lambda p, n: [cont] * n)
    assert episodes[0].step_boundaries == [0, 2, len(response)]  # s0 = the prompt, s1 = prompt + "\nx"
    longest = len(prompt) + len("\nx") + len(cont) + 1
    for limit, want in ((longest, [1.0, 1.0]), (longest - 1, [1.0, 0.0]),
                        (len(prompt) + len(cont) + 1, [1.0, 0.0]), (len(prompt) + len(cont), [0.0, 0.0])):
        estimate_mc_values(eng, task, CharTokenizer(), rows, episodes, k=2, cap=None, temperature=0.6,
                           top_p=0.9, max_new_tokens=8, max_sequence_length=limit, stop=[], seed=1)
        assert episodes[0].step_values == want, limit


def test_dedup_key_is_the_whole_token_prefix():
    """States merge exactly when prompt ids and response-prefix ids are equal: two samples of one
    question with same-length but different first steps are two states; the same prefix reached by
    other token ids (another tokenization of the same text) is another state too."""
    task = get_task("gsm8k")
    a = char_episode(task, 0, "P", "\nx = 2\ny\n#### 4", j=0)
    b = char_episode(task, 0, "P", "\nx = 3\ny\n#### 4", j=1)
    c = char_episode(task, 0, "P", "\nx = 2\nz\n#### 5", j=2)
    reqs, per, naive = build_mc_requests([a, b, c], cap=None)
    assert naive == 6 and len(reqs) == 3  # s0 shared by all, s1 of a and c shared, s1 of b alone
    assert per == [[0, 1], [0, 2], [0, 1]]
    d = char_episode(task, 0, "P", "\nx = 2\ny\n#### 4", j=3)
    d.response_ids = [ord("\n"), 7777] + d.response_ids[3:]  # "x " as one token: same text, other ids
    d.token_starts = [0, 1] + d.token_starts[3:]
    reqs, per, _ = build_mc_requests([a, d], cap=None)
    assert len(reqs) == 3 and per == [[0, 1], [0, 2]]
