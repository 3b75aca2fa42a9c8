"""Your own data with a task's grader: rows whose question, final answer and (optional) worked
solution live in fields you name (`data.question_field`, `data.answer_field`, `data.solution_field`).

`CustomFieldsTask` wraps the task that grades (`data.task`): it reads the question from your field
and hands the inner grader a row in the inner task's own schema, whose gold solution is your
solution or, when you give a bare final answer, that answer written the way the inner task reads
gold answers (`#### 18` for GSM8K-style tasks, `\\boxed{18}` for MATH). The answer field wins over
the solution field for grading when both are given.
"""

from __future__ import annotations

from typing import Sequence

from vineppo.tasks.base import Row, Task, TaskWrapper


class MissingSolutionError(ValueError):
    """A worked gold solution was needed (SFT, gold-solution checks) but the data has none."""


def gold_text_for_answer(task: Task, answer: str) -> str:
    """A minimal gold solution from which `task` reads `answer` back as its gold answer."""
    from vineppo.tasks.math import MathTask

    if isinstance(task, MathTask):
        return f"\\boxed{{{answer.strip()}}}"
    return f"#### {answer.strip()}"


class CustomFieldsTask(TaskWrapper):
    """`inner`'s prompt, steps and grader over rows with user-named fields."""

    def __init__(self, inner: Task, question_field: str, answer_field: str | None = None,
                 solution_field: str | None = None) -> None:
        super().__init__(inner)
        if not question_field:
            raise ValueError("a custom data source needs data.question_field")
        if not answer_field and not solution_field:
            raise ValueError("a custom data source needs data.answer_field (a bare final answer is enough) "
                             "or data.solution_field")
        self.query_field = question_field
        self.answer_field = answer_field or None
        self.solution_field = solution_field or ""
        # The answer field is checked by validate_row: it may also be a JSON number (18, 2.5).
        self.required_fields = tuple(f for f in (question_field, solution_field) if f)

    def inner_row(self, row: Row) -> dict:
        """`row` in the inner task's schema (question and gold solution under its field names)."""
        if self.answer_field:
            gold = gold_text_for_answer(self.inner, str(row[self.answer_field]))
        else:
            gold = row[self.solution_field]
        out = dict(row)
        out[self.inner.query_field] = row[self.query_field]
        out[self.inner.solution_field] = gold
        return out

    def query(self, row: Row) -> str:
        return self.inner.query(self.inner_row(row))

    def prompt(self, row: Row) -> str:
        return self.inner.prompt(self.inner_row(row))

    def gold_solution(self, row: Row) -> str:
        if not self.solution_field:
            raise MissingSolutionError(
                f"this needs worked gold solutions, but the data gives only final answers "
                f"(field {self.answer_field!r}); set data.solution_field to the field holding solutions")
        return row[self.solution_field]

    def validate_row(self, row: Row) -> None:
        if self.answer_field:
            name = self.answer_field
            if name not in row:
                raise ValueError(f"required field {name!r} is missing")
            value = row[name]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(f"required field {name!r} must be a string or a number, got {type(value).__name__}")
            if not str(value).strip():
                raise ValueError(f"required field {name!r} is empty")
        check = getattr(self.inner, "validate_row", None)
        if check is None:
            return
        try:
            check(self.inner_row(row))
        except ValueError as e:
            # The inner task names its own field; the user knows theirs.
            field = self.answer_field or self.solution_field
            raise ValueError(f"field {field!r}: {e}") from None

    def gold_answer(self, row: Row) -> str:
        return self.inner.gold_answer(self.inner_row(row))

    def grade_many(self, responses: Sequence[str], rows: Sequence[Row]) -> list[bool]:
        return self.inner.grade_many(responses, [self.inner_row(r) for r in rows])
