"""Evaluate one model: sample n responses per problem with an engine, grade them, summarise
(`evaluate_model`)."""

from __future__ import annotations

import time
from typing import Sequence

from tqdm.auto import tqdm

from vineppo.engine.base import Completion, Engine, SamplingParams
from vineppo.evaluate.metrics import extracted_answer, summarize
from vineppo.evaluate.settings import (
    DEFAULT_CHUNK_PROBLEMS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_N_SAMPLES,
    DEFAULT_SEED,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    EvalSettings,
)
from vineppo.tasks.base import STOP_STRINGS, Row, Task
from vineppo.tokens import encode_prompt


def _token_budget(prompt_len: int, settings: EvalSettings) -> int:
    """max_new_tokens capped by the context left after the prompt (spec §1.3: min(1024, ctx - prefix))."""
    if settings.max_sequence_length is None:
        return settings.max_new_tokens
    return min(settings.max_new_tokens, settings.max_sequence_length - prompt_len)


def _generate_chunk(engine: Engine, prompts: Sequence[list[int]], settings: EvalSettings,
                    seed: int, stop: Sequence[str] = STOP_STRINGS) -> list[list[Completion]]:
    """Generate n samples per prompt; prompts are grouped by their token budget."""
    out: list[list[Completion] | None] = [None] * len(prompts)
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(_token_budget(len(p), settings), []).append(i)
    for budget, idx in sorted(groups.items()):
        if budget < 1:  # no room left after the prompt: every sample is unfinished
            for i in idx:
                out[i] = [Completion([], "", "length") for _ in range(settings.n_samples)]
            continue
        params = SamplingParams(n=settings.n_samples, temperature=settings.temperature, top_p=settings.top_p,
                                max_new_tokens=budget, stop=tuple(stop), seed=seed)
        for i, comps in zip(idx, engine.generate([prompts[i] for i in idx], params, desc="eval: generate")):
            out[i] = comps
    return out  # type: ignore[return-value]


def _grade(task: Task, rows: Sequence[Row], records: list[dict], unfinished: str = "grade") -> None:
    """Set `correct` and `graded` on every record. With unfinished="wrong", samples cut by the
    token budget (finish_reason "length" or truncated) are wrong without being graded."""
    for r in records:
        r["graded"] = unfinished == "grade" or (r["finish_reason"] == "stop" and not r["truncated"])
    todo = [r for r in records if r["graded"]]
    verdicts = task.grade_many([r["response"] for r in todo], [rows[r["problem_index"]] for r in todo])
    for r in records:
        r["correct"] = False
    for r, ok in zip(todo, verdicts):
        r["correct"] = bool(ok)


def _gold(task: Task, row: Row) -> str | None:
    try:
        return task.gold_answer(row)
    except (KeyError, TypeError, ValueError):
        return None


def evaluate_model(engine: Engine, tokenizer, task: Task, rows: Sequence[Row], *,
                   n_samples: int = DEFAULT_N_SAMPLES, temperature: float = DEFAULT_TEMPERATURE,
                   top_p: float = DEFAULT_TOP_P, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                   seed: int = DEFAULT_SEED, max_sequence_length: int | None = None,
                   chunk_problems: int = DEFAULT_CHUNK_PROBLEMS, progress: bool = True,
                   prompt_ids=None, stop: Sequence[str] = STOP_STRINGS,
                   unfinished: str = "grade") -> tuple[dict, list[dict]]:
    """Sample `n_samples` responses per row with `engine`, grade them with `task`.

    Returns (summary, records).
    - summary: "pass@1" (a fraction in [0, 1]: mean correctness over all samples, averaged over
      problems), "pass@k" for k in 2, 4, 8, ... up to n, f"pass@{n}", f"maj@{n}" (see
      `majority_vote`), "mean_response_tokens", "num_problems", "num_samples", "num_correct",
      "finished_frac", "truncated_frac", "no_answer_frac", "seconds", "generated_tokens".
    - records: one dict per sample: problem_index, sample_index, response, extracted_answer,
      gold_answer, correct, finish_reason ("stop" | "length"), truncated, tokens.
    unfinished: "grade" (default, the official evaluation) grades every sample; "wrong" makes
    unfinished samples (finish_reason "length") and samples whose prompt + response exceed
    `max_sequence_length` wrong without grading, and keeps them out of maj@n.
    The grading mode is the task's (`get_task(name, grading_mode=...)`).
    """
    settings = EvalSettings(n_samples, temperature, top_p, max_new_tokens, seed, max_sequence_length,
                            getattr(task, "grading_mode", "official"), unfinished)
    if not rows:
        raise ValueError("evaluate_model: no rows to evaluate")
    if chunk_problems < 1:
        raise ValueError(f"chunk_problems must be >= 1, got {chunk_problems}")
    t0 = time.perf_counter()
    records: list[dict] = []
    starts = range(0, len(rows), chunk_problems)
    bar = tqdm(total=len(rows), desc=f"eval {task.name}: problems", unit="problem", disable=not progress)
    for chunk_index, begin in enumerate(starts):
        chunk = rows[begin: begin + chunk_problems]
        if prompt_ids is None:  # the paper's prompt; chat prompts: vineppo.prompting.PromptBuilder.ids
            prompts = [encode_prompt(tokenizer, task.prompt(r)) for r in chunk]
        else:
            prompts = [list(prompt_ids(r)) for r in chunk]
        outs = _generate_chunk(engine, prompts, settings, seed + chunk_index, stop)
        for offset, (prompt, comps) in enumerate(zip(prompts, outs)):
            p = begin + offset
            gold = _gold(task, rows[p])
            for j, c in enumerate(comps):
                truncated = (max_sequence_length is not None
                             and len(prompt) + len(c.token_ids) + (c.finish_reason == "stop") > max_sequence_length)
                records.append({
                    "problem_index": p, "sample_index": j, "response": c.text,
                    "extracted_answer": extracted_answer(task, c.text, rows[p]), "gold_answer": gold,
                    "correct": False, "finish_reason": c.finish_reason, "truncated": bool(truncated),
                    "tokens": len(c.token_ids),
                })
        bar.update(len(chunk))
    bar.close()
    t_gen = time.perf_counter() - t0
    _grade(task, rows, records, unfinished)
    summary = summarize(task, records, n_samples)
    summary["generated_tokens"] = int(sum(r["tokens"] for r in records))
    summary["seconds"] = time.perf_counter() - t0
    summary["generate_seconds"] = t_gen
    return summary, records
