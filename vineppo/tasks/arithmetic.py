"""The embedded demo task: synthetic multi-step arithmetic word problems in GSM8K's answer format.

A problem starts from a number of things a person has and applies 2–4 operations to it: adding or
taking away 1..20 of them, and at most one multiplication by 2, 3 or 4 ("doubles them"). The
worked solution has one line per operation (`12+7=19`: compact, since every character is a
token for the tiny demo model and CPU time is the budget) and ends with `#### <answer>`, exactly
like a GSM8K `answer` field, so answer extraction, grading and the newline step splitter are
GSM8K's (`ArithmeticTask` is a `GSM8KTask`). Every intermediate value stays non-negative.

    Question: Mia has 12 shells. She finds 7, gives away 5, triples them. How many shells now?
    Answer:   12+7=19
              19-5=14
              14*3=42
              #### 42

`generate_problems(n, seed)` is a seeded generator; `make_splits(train_n, test_n, seed)` gives
train/test lists that are disjoint by the problem's arithmetic (start number and the sequence of
operations): the names and objects in the wording are not part of that key, so no test problem's
computation is ever seen in training.
"""

from __future__ import annotations

import random
import re
from typing import Iterator

from vineppo.tasks.gsm8k import GSM8KTask

#: (name, pronoun)
NAMES = (
    ("Tom", "He"), ("Sam", "He"), ("Ben", "He"), ("Max", "He"), ("Leo", "He"), ("Jack", "He"),
    ("Mia", "She"), ("Ann", "She"), ("Zoe", "She"), ("Lily", "She"), ("Emma", "She"), ("Kate", "She"),
)
OBJECTS = ("apples", "marbles", "coins", "stickers", "books", "cards", "pens", "shells", "stamps", "cookies")
#: the wording is terse on purpose: every token costs CPU time in the demo
ADD_VERBS = ("finds {n}", "buys {n}", "gets {n}")
SUB_VERBS = ("gives away {n}", "loses {n}", "sells {n}")
MUL_VERBS = {2: "doubles them", 3: "triples them", 4: "quadruples them"}
#: largest starting number and largest operand of + and -
MAX_NUMBER = 20
MIN_OPS, MAX_OPS = 2, 4

_LINE = re.compile(r"(\d+)([-+*])(\d+)=(\d+)")

#: (op, operand): op is "+", "-" or "*"
Op = tuple[str, int]
#: what makes two problems the same computation: (start, ops)
ProblemKey = tuple[int, tuple[Op, ...]]


def apply_op(value: int, op: Op) -> int:
    sym, n = op
    if sym == "+":
        return value + n
    if sym == "-":
        return value - n
    if sym == "*":
        return value * n
    raise ValueError(f"unknown operation {sym!r}")


def sample_key(rng: random.Random, *, min_ops: int = MIN_OPS, max_ops: int = MAX_OPS,
               max_number: int = MAX_NUMBER, mul_prob: float = 0.5) -> ProblemKey:
    """A random computation: start in 2..max_number, 2–4 operations, at most one multiplication."""
    n_ops = rng.randint(min_ops, max_ops)
    start = rng.randint(2, max_number)
    mul_at = rng.randrange(n_ops) if rng.random() < mul_prob else -1
    value, ops = start, []
    for i in range(n_ops):
        if i == mul_at:
            op: Op = ("*", rng.randint(2, 4))
        elif value >= 2 and rng.random() < 0.5:
            op = ("-", rng.randint(1, min(max_number, value - 1)))  # stays >= 1
        else:
            op = ("+", rng.randint(1, max_number))
        ops.append(op)
        value = apply_op(value, op)
    return start, tuple(ops)


def solve(key: ProblemKey) -> tuple[list[str], int]:
    """(solution lines, answer) of a computation: one `a<op>b=c` line per operation."""
    value, ops = key
    lines = []
    for sym, n in ops:
        new = apply_op(value, (sym, n))
        lines.append(f"{value}{sym}{n}={new}")
        value = new
    return lines, value


def render(key: ProblemKey, rng: random.Random) -> dict:
    """A GSM8K-style row {"question", "answer"} for the computation `key` (wording drawn from rng)."""
    start, ops = key
    name, pronoun = rng.choice(NAMES)
    thing = rng.choice(OBJECTS)
    actions = []
    for sym, n in ops:
        if sym == "+":
            actions.append(rng.choice(ADD_VERBS).format(n=n))
        elif sym == "-":
            actions.append(rng.choice(SUB_VERBS).format(n=n))
        else:
            actions.append(MUL_VERBS[n])
    question = f"{name} has {start} {thing}. {pronoun} {', '.join(actions)}. How many {thing} now?"
    lines, answer = solve(key)
    return {"question": question, "answer": "\n".join(lines) + f"\n#### {answer}"}


def problem_key(row: dict) -> ProblemKey:
    """Recover the computation of a generated row from its solution lines."""
    body = row["answer"].rsplit("\n#### ", 1)[0].split("\n")
    ops: list[Op] = []
    start = None
    for line in body:
        m = _LINE.fullmatch(line)
        if m is None:
            raise ValueError(f"not a solution line: {line!r}")
        a, sym, b = m.group(1), m.group(2), m.group(3)
        if start is None:
            start = int(a)
        ops.append((sym, int(b)))
    assert start is not None
    return start, tuple(ops)


def _unique_keys(rng: random.Random, exclude: set, **kw) -> Iterator[ProblemKey]:
    seen = set(exclude)
    misses = 0
    while True:
        key = sample_key(rng, **kw)
        if key in seen:
            misses += 1
            if misses > 100_000:
                raise ValueError("ran out of distinct arithmetic problems; ask for fewer")
            continue
        misses = 0
        seen.add(key)
        yield key


def generate_problems(n: int, seed: int = 0, *, exclude: set | None = None, stream: str = "",
                      **kw) -> list[dict]:
    """`n` rows with distinct computations (none in `exclude`), reproducible from (`seed`, `stream`).

    Keyword arguments go to `sample_key` (min_ops, max_ops, max_number, mul_prob)."""
    rng = random.Random(f"vineppo-arithmetic-{stream}-{seed}")
    keys = _unique_keys(rng, exclude or set(), **kw)
    return [render(next(keys), rng) for _ in range(n)]


def make_splits(train_n: int, test_n: int, seed: int = 0, **kw) -> tuple[list[dict], list[dict]]:
    """(train, test): `test_n` test problems first, then `train_n` train problems whose
    computations (start number, operations) never occur in test. Same seed → same rows."""
    test = generate_problems(test_n, seed, stream="test", **kw)
    test_keys = {problem_key(r) for r in test}
    train = generate_problems(train_n, seed, stream="train", exclude=test_keys, **kw)
    return train, test


class ArithmeticTask(GSM8KTask):
    """Synthetic arithmetic word problems; rows are GSM8K-shaped ({"question", "answer"}), so the
    prompt, `####` answer extraction, numeric grading and one-step-per-line splitting are GSM8K's."""

    name = "arithmetic"

    def __init__(self, grading_mode: str = "official", timeout: float = 15.0) -> None:
        super().__init__(remove_calculator=False, grading_mode=grading_mode, timeout=timeout)  # no `<<...>>` annotations in generated rows

    def oracle_value(self, row: dict, prefix: str) -> float | None:
        """1.0 when every line written so far is the gold computation's line at that place (the
        `#### N` line with the answer), else 0.0: the exact value of the state for a solver that
        makes no further mistake. Such a solver carries on from what is written, so one wrong line
        makes its answer wrong, and a prefix of right lines ends right. None with another
        `answer_format` than `#### N` (the last line is then not the gold one)."""
        if self.answer_format != "hashes":
            return None
        gold = [line.replace(" ", "") for line in row["answer"].split("\n")]
        written = [line.replace(" ", "") for line in prefix.split("\n") if line.strip()]
        if len(written) > len(gold):
            return 0.0
        return float(all(w == g for w, g in zip(written, gold)))
