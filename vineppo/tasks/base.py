"""The Task interface: text in, text out. A task never sees tokens or models (docs/design.md)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping, Sequence

Row = Mapping[str, Any]

# The paper's prompt (spec §3): identical for GSM8K and MATH, no few-shot, no chat template.
PROMPT_TEMPLATE = "[MATH_TASK] Problem:\n{query}\n\nSolution:"
# Generation stops here (spec §3 / §8).
STOP_STRINGS = ("\n\n\nProblem:",)
#: `grading.mode` values: the paper's graders (default) or Hugging Face's math-verify
GRADING_MODES = ("official", "math_verify")


class Task(ABC):
    """Prompt, answer extraction, grading and reasoning-step splitting for one dataset."""

    name: str = ""
    #: the row field holding the question text
    query_field: str = ""
    #: the row field holding the worked gold solution
    solution_field: str = ""
    #: the fields every row must carry (checked by vineppo.data)
    required_fields: tuple[str, ...] = ()

    def query(self, row: Row) -> str:
        return row[self.query_field]

    def prompt(self, row: Row) -> str:
        """`[MATH_TASK] Problem:\\n{query}\\n\\nSolution:` (spec §3)."""
        return PROMPT_TEMPLATE.format(query=self.query(row))

    def sft_target(self, row: Row) -> str:
        """The SFT target that follows the prompt: `"\\n{solution}\\n"` (spec §3); EOS is added by the caller."""
        return "\n" + self.gold_solution(row) + "\n"

    def gold_solution(self, row: Row) -> str:
        return row[self.solution_field]

    @abstractmethod
    def split_steps(self, response: str) -> list[int]:
        """Step boundaries o with o[0] == 0, o[-1] == len(response), non-decreasing. Never raises."""

    @abstractmethod
    def extract_answer(self, response: str) -> str | None:
        """The model's final answer in `response`, or None if there is none."""

    @abstractmethod
    def gold_answer(self, row: Row) -> str:
        """The reference answer of `row`."""

    @abstractmethod
    def is_correct(self, response: str, row: Row) -> bool:
        """Whether `response` (the text after `Solution:`) answers `row` correctly."""

    def has_final_answer(self, response: str) -> bool:
        """Whether a final answer can be read off `response`. A response that stopped by itself but
        has none is *unfinished* in the official reward function's sense: reward 0 and no EOS
        appended or trained (spec §1.3). GSM8K: a `####` is present."""
        return self.extract_answer(response) is not None

    def reward(self, response: str, row: Row) -> float:
        """1.0 if correct, else 0.0 (unparseable, empty, wrong). Spec §3: no format reward."""
        return 1.0 if self.is_correct(response, row) else 0.0

    def oracle_value(self, row: Row, prefix: str) -> float | None:
        """The exact value of the state whose response so far is `prefix`, where the task can tell
        it without sampling; None (the default) where it cannot. The value probe records it next to
        the estimates (`vineppo.probe`). Wrappers (`TaskWrapper`) change the text or the fields the
        inner task reads, so they give None too."""
        return None

    def grade_many(self, responses: Sequence[str], rows: Sequence[Row]) -> list[bool]:
        """Grade many (response, row) pairs. Subclasses parallelise with per-case timeouts."""
        if len(responses) != len(rows):
            raise ValueError(f"grade_many: {len(responses)} responses but {len(rows)} rows")
        return [self.is_correct(r, row) for r, row in zip(responses, rows)]

    def rewards_many(self, responses: Sequence[str], rows: Sequence[Row]) -> list[float]:
        return [1.0 if ok else 0.0 for ok in self.grade_many(responses, rows)]


class TaskWrapper(Task):
    """A Task that forwards everything to `inner`; subclasses change one aspect (e.g. where the
    fields live, or reading the answer after a reasoning block) and keep the inner grader."""

    def __init__(self, inner: Task) -> None:
        self.inner = inner
        self.name = inner.name
        self.query_field = inner.query_field
        self.solution_field = inner.solution_field
        self.required_fields = tuple(inner.required_fields)

    def query(self, row: Row) -> str:
        return self.inner.query(row)

    def prompt(self, row: Row) -> str:
        return self.inner.prompt(row)

    def sft_target(self, row: Row) -> str:
        return "\n" + self.gold_solution(row) + "\n"

    def gold_solution(self, row: Row) -> str:
        return self.inner.gold_solution(row)

    def validate_row(self, row: Row) -> None:
        check = getattr(self.inner, "validate_row", None)
        if check is not None:
            check(row)

    def split_steps(self, response: str) -> list[int]:
        return self.inner.split_steps(response)

    def extract_answer(self, response: str) -> str | None:
        return self.inner.extract_answer(response)

    def has_final_answer(self, response: str) -> bool:
        return self.inner.has_final_answer(response)

    def gold_answer(self, row: Row) -> str:
        return self.inner.gold_answer(row)

    def is_correct(self, response: str, row: Row) -> bool:
        return self.grade_many([response], [row])[0]

    def grade_many(self, responses: Sequence[str], rows: Sequence[Row]) -> list[bool]:
        return self.inner.grade_many(responses, rows)
