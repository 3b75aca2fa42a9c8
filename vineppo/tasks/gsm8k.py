"""GSM8K in its original format: worked solution lines, then `#### <answer>` (spec §1.2, §3).

Behaviour follows the official `tasks/gsm8k.py` with `use_original_format: true`. Where the
official code crashes or is needlessly strict, this module departs; each departure is marked
with "DEPARTURE" below and listed here:

- Grading (`official` mode) is the official exact string match, with one fix: commas are
  removed from the gold too (the official code strips them from the prediction only, so a gold
  such as `5,600` could never be matched). `18.`, `18.0`, `+18` or `018` are wrong, as there.
- `math_verify` grading mode: the extracted answer and the gold are compared by Hugging Face's
  math-verify (numerically: `18.0` == `18`), in a grader worker under a timeout.
- The step splitter never raises: several `\\n#### ` tails, whitespace-only text and the like
  all give a valid partition of the text.
"""

from __future__ import annotations

import re
from typing import Sequence

from vineppo.tasks.base import GRADING_MODES, Row, Task

#: the answer marker; the prediction is the text after its last occurrence
ANSWER_MARKER = "####"
#: the answer tail that the splitter merges into the last reasoning step
ANSWER_PREFIX = "\n#### "
#: reasoning steps are lines
STEP_DELIMITER = "\n"

# `<<48/2=24>>` calculator annotations (non-greedy, may span lines like the official regex).
_CALCULATOR_ANNOTATION = re.compile(r"<<.*?>>", re.DOTALL)


def remove_calculator_annotations(text: str) -> str:
    """Drop every `<<...>>` calculator annotation from a GSM8K solution."""
    return _CALCULATOR_ANNOTATION.sub("", text)


def extract_answer(text: str) -> str | None:
    """The text after the last `####`, stripped; None when there is no `####`.

    As the official `text.split("####")[-1]`: occurrences are found left to right, so
    `##### 540` gives `# 540`. A trailing `####` gives "" (not None), which grades as wrong.
    """
    if ANSWER_MARKER not in text:
        return None
    return text.split(ANSWER_MARKER)[-1].strip()


def normalize_answer(answer: str) -> str:
    """Strip, drop every comma, lower-case: the official prediction normalisation."""
    return answer.strip().replace(",", "").lower()


def answers_match(predicted: str, gold: str) -> bool:
    """The official check `pred.strip().replace(',', '').lower() == gold.strip().lower()`.

    DEPARTURE (a documented fix): commas are removed from the gold too, so the golds written
    with thousands separators (79 train and 14 test rows, e.g. `5,600`) can be matched at all.
    Everything else is an exact string match: `18.`, `18.0`, `+18`, `018`, `$18` are wrong.
    """
    return normalize_answer(predicted) == normalize_answer(gold)


def split_steps(text: str) -> list[int]:
    """Character offsets of GSM8K reasoning steps (spec §1.2): one step per line.

    Returns `o` with `o[0] == 0`, `o[-1] == len(text)`, non-decreasing; step i is
    `text[o[i]:o[i+1]]` and the steps concatenate back to `text` exactly. Rules, as in the
    official `split_solution_into_intermediate_steps` (original format):

    - the text is cut into lines on "\\n"; every step after the first starts with its "\\n";
    - lines before the first non-blank line (blank = empty or whitespace only) are merged into
      that line's step;
    - the answer tail "\\n#### <answer>" (everything from the marker to the end, newlines
      included) is merged, together with any blank lines before it, into the last non-blank
      line's step;
    - a blank line elsewhere is a step of its own ("\\n"), and so are blank lines at the end of a
      text without an answer tail.
    """
    n = len(text)
    # DEPARTURE: the official code splits on "\n#### " and unpacks exactly two parts, so a text
    # with several answer tails raises. We take the LAST one as the answer tail (the same
    # occurrence whose answer is graded); earlier "\n#### ..." lines are ordinary lines.
    tail = text.rfind(ANSWER_PREFIX)
    body_end = tail if tail >= 0 else n

    # Line i of the body starts at starts[i]; for i > 0 that is the index of its leading "\n".
    starts = [0]
    pos = text.find(STEP_DELIMITER, 0, body_end)
    while pos >= 0:
        starts.append(pos)
        pos = text.find(STEP_DELIMITER, pos + 1, body_end)
    ends = starts[1:] + [body_end]
    non_blank = [
        i for i, (a, b) in enumerate(zip(starts, ends)) if text[a:b].strip()
    ]

    if not non_blank:
        # Every line is blank (this includes the empty text and a text that is only an answer
        # tail). With an answer tail the official code also gives one step. DEPARTURE: without
        # one, the official code makes each blank line a step (starting with a zero-length step
        # when the text begins with "\n"); we give the whole text as a single step instead, so
        # no degenerate empty state is created. The empty text gives [0, 0].
        return [0, n]

    first = non_blank[0]
    last = non_blank[-1] if tail >= 0 else len(starts) - 1
    return [0] + starts[first + 1:last + 1] + [n]


class GSM8KTask(Task):
    """GSM8K with the official original-format gold, `####` answer extraction and line steps."""

    name = "gsm8k"
    query_field = "question"
    solution_field = "answer"
    required_fields = ("question", "answer")

    def __init__(self, remove_calculator: bool = True, answer_format: str = "hashes",
                 grading_mode: str = "official", timeout: float = 15.0) -> None:
        from vineppo.tasks.boxed import ANSWER_FORMATS

        if grading_mode not in GRADING_MODES:
            raise ValueError(f"grading_mode must be one of {', '.join(GRADING_MODES)}, got {grading_mode!r}")
        #: strip `<<...>>` calculator annotations from gold solutions (the paper's setting)
        self.remove_calculator = remove_calculator
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"unknown answer format {answer_format!r}; valid: {', '.join(ANSWER_FORMATS)}")
        #: how responses state their answer: "hashes" (the paper), "boxed" or "auto" (tasks/boxed.py)
        self.answer_format = answer_format
        #: "official" (the paper's exact match) or "math_verify" (numeric, via math-verify)
        self.grading_mode = grading_mode
        #: seconds per case in `math_verify` mode
        self.timeout = float(timeout)

    def query(self, row: Row) -> str:
        # The official preprocessing strips the question (a no-op on the released files).
        return row[self.query_field].strip()

    def gold_solution(self, row: Row) -> str:
        """The `answer` field without calculator annotations; it ends with "\\n#### N"."""
        solution = row[self.solution_field]
        return remove_calculator_annotations(solution) if self.remove_calculator else solution

    def validate_row(self, row: Row) -> None:
        """Raise ValueError naming the field when `row` cannot be graded (used by vineppo.data)."""
        answer = row.get(self.solution_field)
        if not isinstance(answer, str) or ANSWER_MARKER not in answer:
            raise ValueError(f"field {self.solution_field!r} has no '{ANSWER_MARKER}' answer line")
        if not answer[answer.rfind(ANSWER_MARKER) + len(ANSWER_MARKER):].strip():
            raise ValueError(f"field {self.solution_field!r} has an empty final answer after '{ANSWER_MARKER}'")

    def split_steps(self, response: str) -> list[int]:
        return split_steps(response)

    def extract_answer(self, response: str) -> str | None:
        if self.answer_format != "hashes":
            from vineppo.tasks.boxed import extract_final_answer

            return extract_final_answer(response, self.answer_format, extract_answer)
        return extract_answer(response)

    def gold_answer(self, row: Row) -> str:
        """The text after the last `####` of the `answer` field (e.g. "72" or "5,600")."""
        answer = row[self.solution_field]
        gold = extract_answer(answer) if isinstance(answer, str) else None
        if not gold:
            raise ValueError(f"GSM8K row has no final answer after '{ANSWER_MARKER}': {answer!r}")
        return gold

    def is_correct(self, response: str, row: Row) -> bool:
        """True iff the answer after the last `####` of `response` matches the gold. Never raises."""
        if self.grading_mode != "official":
            return self.grade_many([response], [row])[0]
        if not isinstance(response, str):
            return False
        predicted = self.extract_answer(response)
        if predicted is None:
            return False
        try:
            gold = self.gold_answer(row)
        except (KeyError, TypeError, ValueError):
            # A row without a usable gold cannot be answered; vineppo.data rejects such rows
            # when loading, so this only guards rows built by hand.
            return False
        return answers_match(predicted, gold)

    def grade_many(self, responses: Sequence[str], rows: Sequence[Row]) -> list[bool]:
        """Grade many pairs; in `math_verify` mode math-verify compares the extracted answer with
        the gold in grader workers, each pair under `self.timeout` seconds."""
        if self.grading_mode == "official":
            return super().grade_many(responses, rows)
        if len(responses) != len(rows):
            raise ValueError(f"grade_many: {len(responses)} responses but {len(rows)} rows")
        from vineppo.tasks.math_grading import default_grader_pool

        verdicts = [False] * len(responses)
        positions: list[int] = []
        pairs: list[tuple[str, str]] = []
        for position, (response, row) in enumerate(zip(responses, rows)):
            predicted = self.extract_answer(response) if isinstance(response, str) else None
            try:
                gold = self.gold_answer(row)
            except (KeyError, TypeError, ValueError):
                continue
            if not predicted:
                continue
            positions.append(position)
            # Thousands commas are dropped so that math-verify reads `5,600` as one number.
            pairs.append((gold.replace(",", ""), predicted.replace(",", "")))
        for position, verdict in zip(positions, default_grader_pool().math_verify_many(pairs, self.timeout)):
            verdicts[position] = verdict
        return verdicts
