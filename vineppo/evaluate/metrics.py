"""Estimators over graded samples: pass@k (unbiased), maj@k (majority vote on canonical answers),
and the summary of one evaluation (`summarize`)."""

from __future__ import annotations

import math
import re
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping, Sequence

from vineppo.tasks.base import Row, Task


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from `n` samples of which `c` are correct (Chen et al., 2021):

        pass@k = 1 - C(n - c, k) / C(n, k)

    i.e. the probability that a random size-k subset of the n samples holds a correct one.
    pass@1 = c / n; pass@n = 1 if c > 0 else 0. Computed with exact integer binomials.
    """
    if n < 1:
        raise ValueError(f"pass_at_k: n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n={n}], got {k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_answer(answers: Sequence[str | None]) -> int | None:
    """Index of the sample whose answer wins the vote, or None when no sample has an answer.

    Votes are the answers themselves (compare them in a canonical form, see `vote_key`); `None`
    (no answer) does not vote. Ties are broken deterministically: among the most frequent answers,
    the one that appears first (lowest sample index) wins. The returned index is that answer's
    first occurrence.
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    for i, a in enumerate(answers):
        if a is not None and counts[a] == best:
            return i
    return None  # pragma: no cover - unreachable: some answer has the best count


def majority_vote(answers: Sequence[str | None], verdicts: Sequence[bool]) -> bool:
    """maj@k for one problem: True iff the majority answer is correct.

    `answers[i]` is sample i's extracted answer in canonical form (None = no answer; it does not
    vote) and `verdicts[i]` its grade. The winner is chosen by `majority_answer` (most frequent
    answer; ties go to the answer seen first). The vote is correct iff the verdict of the winner's
    first occurrence is True (samples with the same canonical answer share a verdict, except in
    rare grader timeouts, so the first occurrence decides). No answer at all: False.
    """
    if len(answers) != len(verdicts):
        raise ValueError(f"majority_vote: {len(answers)} answers but {len(verdicts)} verdicts")
    i = majority_answer(answers)
    return bool(verdicts[i]) if i is not None else False


#: a plain decimal number, as the GSM8K grader accepts it (no exponents, inf or nan)
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def _canonical_number(text: str) -> str | None:
    """`text` as a canonical decimal string if it is a plain number (`+18.0` -> `18`), else None."""
    if not _PLAIN_NUMBER.fullmatch(text):
        return None
    try:
        value = Decimal(text).normalize()
    except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
        return None
    return format(value, "f") if value != 0 else "0"


def vote_key(task: Task, answer: str | None) -> str | None:
    """The canonical form in which answers are compared for majority voting.

    Whitespace runs collapse to one space. For GSM8K-format tasks (numbers graded as numbers), the
    grader's normalisation also applies: commas removed, lower case, and plain numbers by value
    (`18.0`, `18` and `+18` vote together). MATH answers are already normalised by the
    extractor (`strip_string`); they are compared as strings. Empty answers do not vote.
    """
    if answer is None:
        return None
    from vineppo.tasks.gsm8k import GSM8KTask

    key = " ".join(answer.split())
    while getattr(task, "inner", None) is not None:  # custom fields / reasoning tags wrap the grader
        task = task.inner
    if isinstance(task, GSM8KTask):  # GSM8K and tasks in its answer format (the demo's arithmetic)
        key = key.replace(",", "").lower()
        number = _canonical_number(key)
        key = number if number is not None else key
    return key or None


def extracted_answer(task: Task, response: str, row: Row) -> str | None:
    """The answer the grader would read from `response` (with the question, where it matters)."""
    extract_many = getattr(task, "extract_answers", None)
    if callable(extract_many):
        answers = extract_many(response, row)
        return ", ".join(answers) if answers else None
    return task.extract_answer(response)


def _was_graded(record: Mapping[str, Any]) -> bool:
    # Records written before `graded` existed followed the "wrong" rule.
    return bool(record.get("graded", record["finish_reason"] == "stop" and not record["truncated"]))


def summarize(task: Task, records: Sequence[Mapping[str, Any]], n_samples: int) -> dict:
    """Summary metrics from per-sample records (each with problem_index, correct, vote, tokens, ...)."""
    by_problem: dict[int, list[Mapping[str, Any]]] = {}
    for r in records:
        by_problem.setdefault(int(r["problem_index"]), []).append(r)
    if not by_problem:
        raise ValueError("summarize: no samples")
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, n_samples) if k <= n_samples})
    pass_k = {k: [] for k in ks}
    maj = []
    for samples in by_problem.values():
        samples = sorted(samples, key=lambda r: r["sample_index"])
        n = len(samples)
        c = sum(bool(r["correct"]) for r in samples)
        for k in ks:
            pass_k[k].append(pass_at_k(n, c, min(k, n)))
        maj.append(majority_vote([vote_key(task, r["extracted_answer"]) if _was_graded(r) else None
                                  for r in samples],
                                 [bool(r["correct"]) for r in samples]))
    total = len(records)
    out: dict[str, Any] = {f"pass@{k}": float(sum(v) / len(v)) for k, v in pass_k.items()}
    out[f"maj@{n_samples}"] = float(sum(maj) / len(maj))
    out.update({
        "mean_response_tokens": float(sum(r["tokens"] for r in records) / total),
        "num_problems": len(by_problem),
        "num_samples": total,
        "num_correct": int(sum(bool(r["correct"]) for r in records)),
        "finished_frac": float(sum(r["finish_reason"] == "stop" for r in records) / total),
        "truncated_frac": float(sum(bool(r["truncated"]) for r in records) / total),
        "no_answer_frac": float(sum(r["extracted_answer"] is None for r in records) / total),
    })
    return out
