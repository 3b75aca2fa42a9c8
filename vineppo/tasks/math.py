"""MATH (PRM800K split, MATH-500 test): Minerva-style answer extraction and sandboxed grading.

The grading rules, their sources in the official code and the places this reproduction departs
from it are documented in `vineppo.tasks.math_grading`; step splitting is
`vineppo.tasks.math_steps.split_math_steps` (spec §1.2).

The gold answer is re-extracted from the gold *solution* with the same routine as the model's
answer (spec §3), not read from the rows' `answer` field.
"""

from __future__ import annotations

from typing import Sequence

from vineppo.tasks.base import GRADING_MODES, Row, Task
from vineppo.tasks.math_grading import (
    DEFAULT_TIMEOUT,
    GraderPool,
    default_grader_pool,
    extract_math_answer,
)
from vineppo.tasks.math_steps import split_math_steps


class MathTask(Task):
    """MATH with the paper's Minerva-mode grader; rewards are 1.0 (correct) or 0.0."""

    name = "math"
    query_field = "problem"
    solution_field = "solution"
    required_fields = ("problem", "solution")

    def __init__(
        self, timeout: float = DEFAULT_TIMEOUT, pool: GraderPool | None = None, grading_mode: str = "official"
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if grading_mode not in GRADING_MODES:
            raise ValueError(f"grading_mode must be one of {', '.join(GRADING_MODES)}, got {grading_mode!r}")
        #: "official" (the paper's Minerva grader) or "math_verify" (Hugging Face's math-verify)
        self.grading_mode = grading_mode
        #: seconds allowed for the symbolic checks of one graded response
        self.timeout = float(timeout)
        # None: the shared module-level pool, started on first use and stopped at exit.
        self._pool = pool

    @property
    def pool(self) -> GraderPool:
        return self._pool if self._pool is not None else default_grader_pool()

    def query(self, row: Row) -> str:
        # 489 original train problems end in "\n"; the PRM800K files the paper used are stripped.
        return row[self.query_field].strip()

    def validate_row(self, row: Row) -> None:
        """Raise ValueError when the row's solution has neither a box nor an extractable answer.

        A solution that writes `\\boxed 2` (no braces; train/algebra/24014 and 25040) is kept:
        as in the official code its gold answer list is empty, and only a response without any
        answer matches it (see `grade_many`).
        """
        if "boxed" not in self.gold_solution(row) and not self.gold_answers(row):
            raise ValueError(f"field {self.solution_field!r} has no extractable final answer (no \\boxed)")

    def split_steps(self, response: str) -> list[int]:
        return split_math_steps(response)

    def extract_answers(self, response: str, row: Row | None = None) -> list[str]:
        """All normalised answers in `response`; `row` supplies the question, which decides
        whether a comma list is split ("... separated by commas")."""
        question = row.get(self.query_field) if row is not None else None
        return extract_math_answer(response, question if isinstance(question, str) else None)

    def has_final_answer(self, response: str) -> bool:
        """Always true: the official MATH extraction falls back to the last number (or the whole
        text) and never reports "no answer", so every stopped MATH response gets EOS (spec §1.3)."""
        return True

    def extract_answer(self, response: str) -> str | None:
        """The answers of `response` joined by ", " (usually just one), or None if there is none.

        Without the question a comma list stays one answer; use `extract_answers` with the row
        when that matters. The joined string is a stable key for majority voting.
        """
        if not isinstance(response, str):
            return None
        answers = extract_math_answer(response)
        return ", ".join(answers) if answers else None

    def gold_answers(self, row: Row) -> list[str]:
        """The gold answers, extracted from the gold solution exactly like a model's answers."""
        return self.extract_answers(self.gold_solution(row), row)

    def gold_answer(self, row: Row) -> str:
        """The gold answers joined by ", " (one answer for almost every row)."""
        answers = self.gold_answers(row)
        if not answers:
            raise ValueError(f"MATH row has no extractable final answer in {self.solution_field!r}")
        return ", ".join(answers)

    def is_correct(self, response: str, row: Row) -> bool:
        """True iff `response` answers `row` correctly. False for a None or empty response."""
        return self.grade_many([response], [row])[0]

    def reward(self, response: str, row: Row) -> float:
        """1.0 if correct, else 0.0 (also for None, empty or answerless responses)."""
        return 1.0 if self.is_correct(response, row) else 0.0

    def grade_many(self, responses: Sequence[str], rows: Sequence[Row]) -> list[bool]:
        """Grade many (response, row) pairs; symbolic checks run in parallel in the grader pool,
        each response under `self.timeout` seconds (a timeout grades as wrong)."""
        if len(responses) != len(rows):
            raise ValueError(f"grade_many: {len(responses)} responses but {len(rows)} rows")
        if self.grading_mode == "math_verify":
            return self._grade_many_math_verify(responses, rows)
        verdicts = [False] * len(responses)
        positions: list[int] = []
        cases: list[tuple[list[str], list[str]]] = []
        for position, (response, row) in enumerate(zip(responses, rows)):
            if not isinstance(response, str):
                continue
            try:
                gold = self.gold_answers(row)
            except (KeyError, TypeError, AttributeError):
                continue  # a row without a solution cannot be answered (vineppo.data rejects it)
            predicted = self.extract_answers(response, row)
            if not gold:
                # The official eval_math on an empty gold list: only an empty prediction matches.
                verdicts[position] = not predicted
                continue
            positions.append(position)
            cases.append((predicted, gold))
        if cases:
            for position, verdict in zip(positions, self.pool.grade_answer_lists(cases, self.timeout)):
                verdicts[position] = verdict
        return verdicts

    def _grade_many_math_verify(self, responses: Sequence[str], rows: Sequence[Row]) -> list[bool]:
        """`math_verify` mode: math-verify extracts and compares the answers of the response and
        of the gold solution, in the grader workers under `self.timeout` seconds per pair."""
        verdicts = [False] * len(responses)
        positions: list[int] = []
        pairs: list[tuple[str, str]] = []
        for position, (response, row) in enumerate(zip(responses, rows)):
            if not isinstance(response, str) or not response.strip():
                continue
            try:
                gold_solution = self.gold_solution(row)
            except (KeyError, TypeError, AttributeError):
                continue
            positions.append(position)
            pairs.append((gold_solution, response))
        for position, verdict in zip(positions, self.pool.math_verify_many(pairs, self.timeout)):
            verdicts[position] = verdict
        return verdicts
