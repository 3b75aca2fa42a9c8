"""Episodes: sample questions, generate responses, score them, record steps (spec §1.1, §1.3).

An `Episode` carries everything the later phases need: the prompt and response token ids, the
response text and its reasoning-step boundaries (character offsets), where each token starts, the
reward, and — once credit is assigned — one advantage per action token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from vineppo.engine.base import Engine, SamplingParams
from vineppo.tasks.base import Row, Task
from vineppo.tokens import decode_response, token_char_starts


@dataclass
class Episode:
    #: index of the question in the train rows
    question_index: int
    #: which of the question's samples this is
    sample_index: int
    prompt_ids: list[int]
    #: generated tokens, without EOS (possibly cut to fit max_sequence_length)
    response_ids: list[int]
    response_text: str
    #: the response ended by itself (EOS / stop string), fits, and has a final answer
    #: (`Task.has_final_answer`): EOS is appended to its actions. A stopped response without an
    #: answer is unfinished, as in the official code: reward 0, no EOS (spec §1.3)
    finished: bool
    #: cut to fit max_sequence_length (reward 0, no EOS)
    truncated: bool
    reward: float
    #: Task.split_steps(response_text)
    step_boundaries: list[int]
    #: character offset at which each response token starts
    token_starts: list[int]
    #: VinePPO: V̂(s_0..s_{n-1}) (None beyond the cap); PPO: unused
    step_values: list[float | None] | None = None
    step_advantages: list[float] | None = None
    #: one per action token (response tokens + EOS if finished)
    advantages: list[float] | None = None
    #: per action token, log-probs the engine reported while sampling (sync canary)
    engine_logprobs: list[float] | None = None
    #: the stop token that ended the response (the engine's `Completion.stop_token_id`: EOS or any
    #: other end id of a chat model); None when a stop string ended it
    stop_token_id: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return len(self.step_boundaries) - 1

    def action_ids(self, eos_id: int | None) -> list[int]:
        """The tokens the policy is trained on: the response, plus the end token when it finished:
        the token that actually ended it (`stop_token_id`, e.g. `<|eot_id|>` where the tokenizer's
        EOS is `<|end_of_text|>`), else `eos_id` (a stop string ended it)."""
        end = self.stop_token_id if self.stop_token_id is not None else eos_id
        if self.finished and end is not None:
            return self.response_ids + [end]
        return list(self.response_ids)


def sample_question_indices(num_rows: int, questions_per_iteration: int, seed: int, iteration: int) -> list[int]:
    """`shuffle(seed + iteration)[:questions_per_iteration]`: without replacement inside an
    iteration, with replacement across iterations (spec §1.1, `dataset_sample_with_replacement`)."""
    if num_rows < 1:
        raise ValueError("no training rows to sample from")
    rng = np.random.default_rng((seed + iteration) % (2**63))
    perm = rng.permutation(num_rows)
    if questions_per_iteration > num_rows:
        reps = -(-questions_per_iteration // num_rows)
        perm = np.concatenate([rng.permutation(num_rows) for _ in range(reps)])
    return [int(i) for i in perm[:questions_per_iteration]]


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """Contiguous shard of `items` for `rank` (all samples of a question stay on one rank)."""
    n = len(items)
    per = -(-n // world_size)
    return list(items[rank * per: (rank + 1) * per])


def generate_episodes(engine: Engine, task: Task, tokenizer, rows: Sequence[Row], question_indices: Sequence[int],
                      *, samples_per_question: int, temperature: float, top_p: float, max_new_tokens: int,
                      max_sequence_length: int, stop: Sequence[str], seed: int | None,
                      want_logprobs: bool = False, prompt_ids: Callable[[Row], list[int]] | None = None,
                      ) -> tuple[list[Episode], dict]:
    """Sample `samples_per_question` responses per question and score them through the task.
    `prompt_ids(row)` gives a row's prompt ids (default: the paper's template with BOS;
    `vineppo.prompting.PromptBuilder.ids` for chat prompts)."""
    from vineppo.tokens import encode_prompt

    t0 = time.perf_counter()
    if prompt_ids is None:
        prompts = [encode_prompt(tokenizer, task.prompt(rows[q])) for q in question_indices]
    else:
        prompts = [list(prompt_ids(rows[q])) for q in question_indices]
    params = SamplingParams(n=samples_per_question, temperature=temperature, top_p=top_p,
                            max_new_tokens=max_new_tokens, stop=tuple(stop), seed=seed, logprobs=want_logprobs)
    outs = engine.generate(prompts, params, desc="episodes: generate")
    t_gen = time.perf_counter() - t0

    episodes: list[Episode] = []
    for q, prompt, completions in zip(question_indices, prompts, outs):
        for j, c in enumerate(completions):
            ids = list(c.token_ids)
            text = c.text
            stopped = c.finish_reason == "stop"
            finished = stopped and task.has_final_answer(text)
            truncated = False
            budget = max_sequence_length - len(prompt) - (1 if finished else 0)
            if len(ids) > budget:
                # Spec §1.3: query+response over max_sequence_length → truncate, score 0, no EOS.
                ids = ids[:max(budget, 0)]
                text = decode_response(tokenizer, ids)
                finished, truncated = False, True
            logp = list(c.logprobs[:len(ids)]) if c.logprobs is not None else None
            episodes.append(Episode(
                question_index=int(q), sample_index=j, prompt_ids=list(prompt), response_ids=ids,
                response_text=text, finished=finished, truncated=truncated, reward=0.0,
                step_boundaries=task.split_steps(text), token_starts=token_char_starts(tokenizer, ids, text),
                engine_logprobs=logp, stop_token_id=c.stop_token_id if finished else None,
                meta={"stopped": stopped},
            ))
    t1 = time.perf_counter()
    # Unfinished (length-stopped) or truncated responses score 0 (spec §3, `penalize_unfinished_response`).
    scored = [i for i, e in enumerate(episodes) if e.finished]
    rewards = task.rewards_many([episodes[i].response_text for i in scored],
                                [rows[episodes[i].question_index] for i in scored])
    for i, r in zip(scored, rewards):
        episodes[i].reward = float(r)
    t_grade = time.perf_counter() - t1
    gen_tokens = sum(len(e.response_ids) for e in episodes)
    stats = {
        "generate/seconds": t_gen,
        "generate/tokens": gen_tokens,
        "generate/tokens_per_s": gen_tokens / max(t_gen, 1e-9),
        "grade/seconds": t_grade,
    }
    return episodes, stats


def episode_metrics(episodes: Sequence[Episode]) -> dict:
    """Per-iteration statistics of a (local) batch of episodes."""
    if not episodes:
        return {}
    rewards = np.array([e.reward for e in episodes])
    by_q: dict[int, list[float]] = {}
    for e in episodes:
        by_q.setdefault(e.question_index, []).append(e.reward)
    return {
        "reward/mean": float(rewards.mean()),
        "reward/pass_rate": float((rewards > 0).mean()),
        "reward/pass_rate_any": float(np.mean([max(v) > 0 for v in by_q.values()])),
        "episodes/count": len(episodes),
        "episodes/finished_frac": float(np.mean([e.finished for e in episodes])),
        # stopped by itself but no final answer (GSM8K: no `####`): unfinished, reward 0, no EOS
        "episodes/no_answer_frac": float(np.mean([bool(e.meta.get("stopped")) and not e.finished
                                                  and not e.truncated for e in episodes])),
        "episodes/truncated_frac": float(np.mean([e.truncated for e in episodes])),
        "response/length_tokens": float(np.mean([len(e.response_ids) for e in episodes])),
        "response/num_steps": float(np.mean([e.num_steps for e in episodes])),
    }
