"""Long arithmetic chains with an exact oracle: a task where every slip is final and where the
true value of some states is known without sampling.

The problems are the arithmetic demo's (`vineppo.tasks.arithmetic`: a start number, then `+n`,
`-n` and at most one `*n`, one line per operation, `#### <answer>` last), with three changes:

- chains are long (`min_ops`..`max_ops` operations, e.g. 6–8), so the outcome reward is spread
  over many steps;
- a commutative line has two correct spellings (`19+7=26` or `7+19=26`), drawn at random for the
  gold solutions, so two correct solutions of one question rarely share their text and a wrong one
  does not share a correct one's prefix up to its slip;
- a response is correct only if its `####` answer is right (GSM8K's extraction and numeric
  comparison) *and* every line of it is right. A slip therefore can never be repaired by a later
  line: every state after the first wrong line has value exactly 0. That is the oracle.

    Question: Mia has 12 shells. She finds 7, gives away 5, triples them, gets 3, ...
    Answer:   7+12=19
              19-5=14
              3*14=42
              42+3=45
              ...
              #### 51

The oracle (pure functions of a row and a text):

- `first_slip(row, text)`: the first wrong line of a response (index among its non-blank lines,
  character offset, and the kind of slip: a wrong result, a wrong operand, a skipped or repeated
  operation, an early, wrong or extra answer, an unreadable line), or None;
- `first_wrong_line(row, text)`: its line index; `first_wrong_step(row, text, boundaries)`: the
  reasoning step (of the newline splitter's boundaries) that holds it;
- `oracle_value(row, prefix)`: 0.0 when the prefix already holds a wrong line (or a last, unfinished
  line that no correct line starts with), else None: the value then depends on the policy;
- `next_step_is_correct(row, prefix, step)` and `oracle_step_pairs(row, prefix, steps)`: which
  alternative next steps keep the chain correct, and the (better, worse) pairs among them.

A line is read without its spaces; `a-b=c` has one spelling, `a+b=c` and `a*b=c` two.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

from vineppo.tasks.arithmetic import MAX_NUMBER, Op, ProblemKey, _unique_keys, apply_op, render
from vineppo.tasks.base import Row
from vineppo.tasks.gsm8k import ANSWER_MARKER, GSM8KTask, answers_match

#: operations whose two operands may be written in either order
COMMUTATIVE = frozenset("+*")
#: default chain length of the long-chain demo
MIN_OPS, MAX_OPS = 6, 8

_OP_LINE = re.compile(r"(\d+)([-+*])(\d+)=(\d+)")
_START = re.compile(r"\bhas (\d+) ")

#: the kinds of slip `first_slip` names
SLIP_KINDS = ("arithmetic", "operand", "skipped", "repeated", "early_answer", "wrong_answer", "extra", "unreadable")


def spellings(value: int, op: Op) -> tuple[str, ...]:
    """The correct lines that apply `op` to the running `value`: one for `-`, two for `+` and `*`
    (one when both operands are equal)."""
    sym, n = op
    result = apply_op(value, op)
    first = f"{value}{sym}{n}={result}"
    if sym in COMMUTATIVE and n != value:
        return first, f"{n}{sym}{value}={result}"
    return (first,)


def solve_spelled(key: ProblemKey, rng: random.Random) -> tuple[list[str], int]:
    """(solution lines, answer) of a computation, each commutative line spelled at random."""
    value, ops = key
    lines = []
    for op in ops:
        lines.append(rng.choice(spellings(value, op)))
        value = apply_op(value, op)
    return lines, value


def render_chain(key: ProblemKey, rng: random.Random) -> dict:
    """A GSM8K-shaped row {"question", "answer"} for `key`; the wording is the arithmetic task's,
    the solution's commutative lines are spelled at random."""
    row = render(key, rng)
    lines, answer = solve_spelled(key, rng)
    row["answer"] = "\n".join(lines) + f"\n{ANSWER_MARKER} {answer}"
    return row


def chain_key(row: Row) -> ProblemKey:
    """The computation (start, operations) of a chain row: the start from the question ("... has
    12 shells."), each operation's operand from the gold line that continues the running value.
    Raises ValueError naming the row when the row is not a chain problem."""
    question, answer = row.get("question"), row.get("answer")
    m = _START.search(question) if isinstance(question, str) else None
    if m is None or not isinstance(answer, str) or ANSWER_MARKER not in answer:
        raise ValueError(f"not a chain problem (no 'has N' start or no '{ANSWER_MARKER}' answer): {question!r}")
    value = start = int(m.group(1))
    ops: list[Op] = []
    body = answer[: answer.rfind(ANSWER_MARKER)]
    for line in (l.replace(" ", "") for l in body.split("\n")):
        if not line:
            continue
        lm = _OP_LINE.fullmatch(line)
        if lm is None:
            raise ValueError(f"chain problem {question!r}: gold line {line!r} is not `a<op>b=c`")
        a, sym, b = int(lm.group(1)), lm.group(2), int(lm.group(3))
        if a == value:
            n = b
        elif sym in COMMUTATIVE and b == value:
            n = a
        else:
            raise ValueError(f"chain problem {question!r}: gold line {line!r} does not continue {value}")
        op = (sym, n)
        if line not in spellings(value, op):
            raise ValueError(f"chain problem {question!r}: gold line {line!r} is wrong")
        ops.append(op)
        value = apply_op(value, op)
    if not ops:
        raise ValueError(f"chain problem {question!r}: no solution lines")
    return start, tuple(ops)


# ----------------------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class Slip:
    """The first wrong line of a text."""
    #: index of the line among the text's non-blank lines (0 = the first solution line)
    line: int
    #: character offset in the text where that line starts
    offset: int
    #: one of SLIP_KINDS
    kind: str


def _lines(text: str):
    """(offset, line without spaces, complete) of each non-blank line; the last line is complete
    only when a newline follows it."""
    offset = 0
    parts = text.split("\n")
    for i, part in enumerate(parts):
        squeezed = part.replace(" ", "").replace("\t", "").replace("\r", "")
        if squeezed:
            yield offset, squeezed, i < len(parts) - 1
        offset += len(part) + 1


def _classify(line: str, value: int, ops: Sequence[Op], i: int) -> str:
    """Why `line` is not a correct spelling of operation `i` applied to `value`."""
    if line.startswith(ANSWER_MARKER):
        return "early_answer"
    m = _OP_LINE.fullmatch(line)
    if m is None:
        return "unreadable"
    a, sym, b = int(m.group(1)), m.group(2), int(m.group(3))

    def same_operands(op: Op) -> bool:
        if sym != op[0]:
            return False
        return (a, b) == (value, op[1]) or (sym in COMMUTATIVE and (b, a) == (value, op[1]))

    if same_operands(ops[i]):
        return "arithmetic"
    if any(same_operands(op) for op in ops[i + 1:]):
        return "skipped"
    if any(same_operands(op) for op in ops[:i]):
        return "repeated"
    return "operand"


def first_slip(row: Row, text: str, *, final: bool = True) -> Slip | None:
    """The first wrong line of `text` (a response, or a prefix of one) for the chain problem `row`,
    or None when every line so far is right.

    Line by line, with the running value of the correct chain: line i must be a correct spelling of
    operation i; after the last operation, `#### <answer>` (GSM8K's answer comparison); after that,
    nothing. `final=False` reads `text` as a prefix: its last line, unless a newline ends it, is
    unfinished and wrong only when no correct line starts with it."""
    start, ops = chain_key(row)
    value, done, answered = start, 0, False
    gold = start
    for op in ops:
        gold = apply_op(gold, op)
    for index, (offset, line, complete) in enumerate(_lines(text)):
        whole = complete or final
        if answered:
            return Slip(index, offset, "extra")
        if done < len(ops):
            right = spellings(value, ops[done])
            if line in right:
                value = apply_op(value, ops[done])
                done += 1
                continue
            if not whole and any(r.startswith(line) for r in right):
                return None
            return Slip(index, offset, _classify(line, value, ops, done))
        # every operation is done: the answer line
        if line.startswith(ANSWER_MARKER):
            if not whole:
                return None  # "#### 4" may still become "#### 42"
            if answers_match(line[len(ANSWER_MARKER):], str(gold)):
                answered = True
                continue
            return Slip(index, offset, "wrong_answer")
        if not whole and ANSWER_MARKER.startswith(line):
            return None  # "##" may still become "#### 42"
        return Slip(index, offset, "extra" if _OP_LINE.fullmatch(line) else "unreadable")
    return None


def first_wrong_line(row: Row, response: str) -> int | None:
    """Index (among non-blank lines, from 0) of the first wrong line of a whole response, or None."""
    slip = first_slip(row, response, final=True)
    return None if slip is None else slip.line


def first_wrong_step(row: Row, response: str, boundaries: Sequence[int]) -> int | None:
    """Index of the reasoning step (between `boundaries`, the task's `split_steps` of `response`)
    that holds the first wrong line of a whole response, or None: where credit for its failure
    belongs."""
    slip = first_slip(row, response, final=True)
    if slip is None:
        return None
    for k in range(len(boundaries) - 1):
        if boundaries[k] <= slip.offset < boundaries[k + 1]:
            return k
    return max(0, len(boundaries) - 2)  # not reached: a wrong line starts before the text's end


def oracle_value(row: Row, prefix: str) -> float | None:
    """The exact value of the state `prefix` (a response prefix) where it is known: 0.0 when the
    prefix already holds a wrong line (no continuation can be graded correct); None otherwise (the
    value then depends on the policy)."""
    return 0.0 if first_slip(row, prefix, final=False) is not None else None


def next_step_is_correct(row: Row, prefix: str, step: str) -> bool | None:
    """Whether the next step `step` after `prefix` keeps the chain correct (True) or makes the
    first slip (False); None when `prefix` is already wrong (every next step then has value 0)."""
    if first_slip(row, prefix, final=False) is not None:
        return None
    return first_slip(row, prefix + step, final=False) is None


def oracle_step_pairs(row: Row, prefix: str, steps: Sequence[str]) -> list[tuple[int, int]]:
    """The pairs (i, j) of alternative next steps from the state `prefix` whose order the oracle
    knows: step i keeps the chain correct, step j makes a slip, so V(prefix + step i) > 0 =
    V(prefix + step j) for any policy that can still finish a correct chain."""
    ok = [next_step_is_correct(row, prefix, s) for s in steps]
    return [(i, j) for i, a in enumerate(ok) if a for j, b in enumerate(ok) if b is False]


# ----------------------------------------------------------------------------- problems


def generate_chain_problems(n: int, seed: int = 0, *, min_ops: int = MIN_OPS, max_ops: int = MAX_OPS,
                            exclude: set | None = None, stream: str = "", max_number: int = MAX_NUMBER,
                            mul_prob: float = 0.5) -> list[dict]:
    """`n` chain rows with distinct computations (none in `exclude`), reproducible from (`seed`, `stream`)."""
    if not 1 <= min_ops <= max_ops:
        raise ValueError(f"chain length: need 1 <= min_ops <= max_ops, got {min_ops}..{max_ops}")
    rng = random.Random(f"vineppo-chain-{stream}-{seed}-{min_ops}-{max_ops}")
    keys = _unique_keys(rng, exclude or set(), min_ops=min_ops, max_ops=max_ops, max_number=max_number,
                        mul_prob=mul_prob)
    return [render_chain(next(keys), rng) for _ in range(n)]


def make_chain_splits(train_n: int, test_n: int, seed: int = 0, **kw) -> tuple[list[dict], list[dict]]:
    """(train, test): the test problems first, then train problems whose computations never occur
    in test. Keyword arguments go to `generate_chain_problems` (min_ops, max_ops, ...)."""
    test = generate_chain_problems(test_n, seed, stream="test", **kw)
    train = generate_chain_problems(train_n, seed, stream="train", exclude={chain_key(r) for r in test}, **kw)
    return train, test


class ChainTask(GSM8KTask):
    """Long arithmetic chains: GSM8K-shaped rows, prompt, `####` extraction and line steps; a
    response is correct when its answer is and every line of it is (see the module docstring)."""

    name = "chain"

    def __init__(self, grading_mode: str = "official", timeout: float = 15.0) -> None:
        super().__init__(remove_calculator=False, grading_mode=grading_mode, timeout=timeout)

    def validate_row(self, row: Row) -> None:
        super().validate_row(row)
        chain_key(row)

    def is_correct(self, response: str, row: Row) -> bool:
        """The `####` answer matches the gold and no line is wrong. Never raises."""
        return self.grade_many([response], [row])[0]

    def grade_many(self, responses: Sequence[str], rows: Sequence[Row]) -> list[bool]:
        if len(responses) != len(rows):
            raise ValueError(f"grade_many: {len(responses)} responses but {len(rows)} rows")
        if self.grading_mode == "official":
            answers = [GSM8KTask.is_correct(self, r, row) for r, row in zip(responses, rows)]
        else:
            answers = super().grade_many(responses, rows)
        return [ok and _lines_ok(row, r) for ok, r, row in zip(answers, responses, rows)]

    def first_wrong_line(self, row: Row, response: str) -> int | None:
        return first_wrong_line(row, response)

    def first_wrong_step(self, row: Row, response: str) -> int | None:
        return first_wrong_step(row, response, self.split_steps(response))

    def oracle_value(self, row: Row, prefix_text: str) -> float | None:
        return oracle_value(row, prefix_text)

    def oracle_step_pairs(self, row: Row, prefix_text: str, steps: Sequence[str]) -> list[tuple[int, int]]:
        return oracle_step_pairs(row, prefix_text, steps)


def _lines_ok(row: Row, response: str) -> bool:
    if not isinstance(response, str):
        return False
    try:
        return first_slip(row, response, final=True) is None
    except ValueError:
        return False  # a row that is not a chain problem (vineppo.data rejects those when loading)
