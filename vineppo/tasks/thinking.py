"""Responses with a reasoning block, `<think> ... </think>` then the answer (R1-style models).

Rules: the reasoning steps are the inner task's steps of the text inside the block; the
final answer is read only after the close tag; a response that opens the block and never closes it
has no answer (reward 0). Templates of such models often open the block in the generation prompt
(the response then starts inside it and only closes it): `opened_in_prompt` says so.

Step layout of a closed block: the inner splitter's steps of the reasoning text (the open tag, if
in the response, joins the first step), then ONE more step from the close tag (with the whitespace
before it) to the end, so the last MC state sits where the model stops reasoning and answers.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from vineppo.tasks.base import Row, Task, TaskWrapper


class ThinkSplit(NamedTuple):
    #: the response uses a reasoning block (opened in it or in the prompt)
    thinking: bool
    #: offset where the close tag starts (len(response) when unclosed or not thinking)
    close_start: int
    #: offset right after the close tag (None: never closed, so no answer)
    answer_start: int | None


def split_think(response: str, open_tag: str, close_tag: str, opened_in_prompt: bool = False) -> ThinkSplit:
    """Where the reasoning block of `response` ends and the answer begins."""
    n = len(response)
    opened = opened_in_prompt or open_tag in response
    close = response.find(close_tag)
    if close >= 0:
        # A close tag ends reasoning even when no open tag was seen (a template that opened it).
        return ThinkSplit(True, close, close + len(close_tag))
    if opened:
        return ThinkSplit(True, n, None)
    return ThinkSplit(False, n, 0)


class ThinkingTask(TaskWrapper):
    """`inner` over responses that may reason inside `open_tag ... close_tag` first."""

    def __init__(self, inner: Task, open_tag: str = "<think>", close_tag: str = "</think>",
                 opened_in_prompt: bool = False) -> None:
        super().__init__(inner)
        if not open_tag or not close_tag:
            raise ValueError("think tags must be non-empty strings")
        self.open_tag, self.close_tag = open_tag, close_tag
        #: the prompt ends inside an open block (the template wrote the open tag)
        self.opened_in_prompt = opened_in_prompt

    def _split(self, response: str) -> ThinkSplit:
        return split_think(response, self.open_tag, self.close_tag, self.opened_in_prompt)

    def answer_text(self, response: str) -> str | None:
        """The part of `response` the answer is read from; None for an unclosed reasoning block."""
        s = self._split(response)
        if not s.thinking:
            return response
        return None if s.answer_start is None else response[s.answer_start:]

    def split_steps(self, response: str) -> list[int]:
        s = self._split(response)
        if not s.thinking:
            return self.inner.split_steps(response)
        # The inner splitter sees the reasoning only: the open tag (and anything before it) joins
        # the first step; with a closed block, whitespace before the close tag joins the answer step.
        opened_at = response.find(self.open_tag, 0, s.close_start)
        begin = opened_at + len(self.open_tag) if opened_at >= 0 else 0
        end = s.close_start
        if s.answer_start is not None:
            end = max(begin, len(response[:end].rstrip()))
        inner = self.inner.split_steps(response[begin:end])
        reasoning = [0] + [begin + o for o in inner[1:]]
        if s.answer_start is None:
            return reasoning  # unclosed: every step is reasoning
        if reasoning[-1] == 0:  # no reasoning text: the whole response is one step
            return [0, len(response)]
        return reasoning + [len(response)]

    def extract_answer(self, response: str) -> str | None:
        text = self.answer_text(response) if isinstance(response, str) else None
        return None if text is None else self.inner.extract_answer(text)

    def has_final_answer(self, response: str) -> bool:
        """An unclosed reasoning block has no answer (unfinished: reward 0, no EOS); otherwise the
        inner task decides on the text after the block."""
        text = self.answer_text(response) if isinstance(response, str) else None
        return text is not None and self.inner.has_final_answer(text)

    def grade_many(self, responses: Sequence[str], rows: Sequence[Row]) -> list[bool]:
        if len(responses) != len(rows):
            raise ValueError(f"grade_many: {len(responses)} responses but {len(rows)} rows")
        texts = [self.answer_text(r) if isinstance(r, str) else None for r in responses]
        keep = [i for i, t in enumerate(texts) if t is not None]
        verdicts = [False] * len(responses)
        for i, ok in zip(keep, self.inner.grade_many([texts[i] for i in keep], [rows[i] for i in keep])):
            verdicts[i] = bool(ok)
        return verdicts
