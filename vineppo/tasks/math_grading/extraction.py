"""MATH answer extraction and the official `strip_string` normalisation (Minerva mode)."""

from __future__ import annotations

import re

# --------------------------------------------------------------------------------------------
# strip_string: the official answer normalisation, step by step
# --------------------------------------------------------------------------------------------

_SQUARE_OR_CUBIC_METRE_UNIT = re.compile(r"\{(c|m)?m\}(\^(2|3))?")
_TRAILING_PM = re.compile(r"p\.m\.$")
_DIGIT_THEN_TRAILING_T = re.compile(r"(\d)\s*t$")
# `(?<!\d)` only skips start positions inside a digit run, which the official pattern could never
# match at before the run start itself; it keeps these substitutions linear on long digit runs.
_ZERO_DECIMALS_BEFORE_NON_DIGIT = re.compile(r"(?<!\d)(\d+)\.0+([^\d])")
_ZERO_DECIMALS_AT_END = re.compile(r"(?<!\d)(\d+)\.0+$")
_SQRT_BARE_ARGUMENT = re.compile(r"\\sqrt(-?[0-9.a-zA-Z]+)")
_SQRT_SPACED_LAST_WORD = re.compile(r"\\sqrt\s+(\w+)$")
_TAN_BARE_ARGUMENT = re.compile(r"\\tan(-?[0-9.a-zA-Z]+)")
_TAN_SPACED_LAST_WORD = re.compile(r"\\tan\s+(\w+)$")


def _drop_trailing_text_unit(s: str) -> str:
    """Drop a trailing `\\text{...}` (a unit such as `\\text{ cm}`), then strip.

    The official code runs `re.sub(r"\\\\text{.*?}$", "", s).strip()`. With no newlines left, that
    pattern matches from the FIRST `\\text{` to the end exactly when the string ends with `}`;
    this is the same rule without the regex's quadratic worst case. The result is kept only when
    it is non-empty (so `\\text{yes}` alone survives).
    """
    start = s.find("\\text{") if s.endswith("}") else -1
    candidate = (s[:start] if start >= 0 else s).strip()
    return candidate if candidate else s


def _drop_mbox_groups(s: str) -> str:
    """Remove every `\\mbox{...}` up to its first `}` (the official non-greedy regex, linear)."""
    pieces: list[str] = []
    pos = 0
    while True:
        start = s.find("\\mbox{", pos)
        if start < 0:
            break
        end = s.find("}", start + len("\\mbox{"))
        if end < 0:
            break  # no `}` after this one, hence none after any later `\mbox{` either
        pieces.append(s[pos:start])
        pos = end + 1
    pieces.append(s[pos:])
    return "".join(pieces)


def _fix_sqrt(s: str) -> str:
    """`\\sqrt2` -> `\\sqrt{2}`, and a spaced last word `\\sqrt x` -> `\\sqrt{x}`."""
    s = _SQRT_BARE_ARGUMENT.sub(r"\\sqrt{\1}", s)
    return _SQRT_SPACED_LAST_WORD.sub(r"\\sqrt{\1}", s)


def _fix_tan(s: str) -> str:
    """`\\tan2` -> `\\tan{2}` (same rules as `_fix_sqrt`)."""
    s = _TAN_BARE_ARGUMENT.sub(r"\\tan{\1}", s)
    return _TAN_SPACED_LAST_WORD.sub(r"\\tan{\1}", s)


def _fix_fracs(s: str) -> str:
    """Brace single-character fraction arguments: `\\frac12` -> `\\frac{1}{2}`, `\\frac1{72}`.

    A `\\frac` followed by fewer than two characters leaves the whole string unchanged.
    """
    parts = s.split("\\frac")
    rebuilt = [parts[0]]
    for part in parts[1:]:
        rebuilt.append("\\frac")
        if part.startswith("{"):
            rebuilt.append(part)
            continue
        if len(part) < 2:
            return s
        numerator, second, rest = part[0], part[1], part[2:]
        if second == "{":
            rebuilt.append("{" + numerator + "}" + second + rest)
        else:
            rebuilt.append("{" + numerator + "}{" + second + "}" + rest)
    return "".join(rebuilt)


def _fix_a_slash_b(s: str) -> str:
    """`3/4` -> `\\frac{3}{4}` when both sides are plain integers (or contain `sqrt`)."""
    pieces = s.split("/")
    if len(pieces) != 2:
        return s
    top, bottom = pieces
    try:
        top_value: int | str = top if "sqrt" in top else int(top)
        bottom_value: int | str = bottom if "sqrt" in bottom else int(bottom)
    except ValueError:  # not an integer, or too many digits for int()
        return s
    if s != f"{top_value}/{bottom_value}":
        return s
    return "\\frac{" + str(top_value) + "}{" + str(bottom_value) + "}"


def strip_string(answer: str) -> str:
    """Normalise one extracted answer the way the official Minerva grader does.

    In order: drop newlines and trailing dots; remove `\\!`; unwrap a whole-string `\\text{...}`;
    `tfrac`/`dfrac`/`cfrac` -> `frac`; remove `\\left`/`\\right`; drop a trailing `\\text{unit}`;
    remove degree signs, `{cm}`/`{m}`(^2/^3) units, a trailing `p.m.` and a trailing `t` after a
    digit; remove `\\$` and `$`; remove `x\\in`; `\\%` -> `%`; ` .5` -> ` 0.5` and `{.5` -> `{0.5`;
    remove `\\cdot`; `infinity`/`inf` -> `\\infty`; remove `\\mathbf`, `\\mathrm` and `\\mbox{...}`;
    `j` -> `i` when there is no `i`; drop zero decimals (`2.00` -> `2`); leading `.` -> `0.`;
    brace `\\sqrt2`/`\\tan2`; remove spaces; brace `\\frac12`; `a/b` -> `\\frac{a}{b}`; finally
    strip trailing backslashes, commas and dots.
    """
    s = str(answer).strip()
    s = s.replace("\n", "")
    s = s.rstrip(".")
    s = s.replace("\\!", "")
    if s.startswith("\\text{") and s.endswith("}"):
        s = s[len("\\text{"):-1]
    s = s.replace("tfrac", "frac").replace("dfrac", "frac").replace("cfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = _drop_trailing_text_unit(s)
    s = s.replace("^{\\circ}", "").strip()
    s = s.replace("^\\circ", "").strip()
    s = _SQUARE_OR_CUBIC_METRE_UNIT.sub("", s).strip()
    s = _TRAILING_PM.sub("", s).strip()
    s = _DIGIT_THEN_TRAILING_T.sub(r"\1", s).strip()
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("x\\in", "")
    # The official code runs this replacement twice (once spelled "\\%", once "\%", the same
    # string), so `\\%` also ends as `%`.
    s = s.replace("\\%", "%").replace("\\%", "%")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    s = s.replace("\\cdot", "")
    s = s.replace("infinity", "\\infty")
    if "\\infty" not in s:
        s = s.replace("inf", "\\infty")
    s = s.replace("+\\inity", "\\infty")
    s = s.replace("\\mathbf", "").replace("\\mathrm", "")
    s = _drop_mbox_groups(s)
    if "j" in s and "i" not in s:
        s = s.replace("j", "i")
    s = _ZERO_DECIMALS_BEFORE_NON_DIGIT.sub(r"\1\2", s)
    s = _ZERO_DECIMALS_AT_END.sub(r"\1", s)
    if not s:
        return s
    if s[0] == ".":
        s = "0" + s
    s = _fix_sqrt(s)
    s = _fix_tan(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    s = _fix_a_slash_b(s)
    return s.rstrip("\\,.")


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

_MINERVA_PREFIX = "final answer is $"
_MINERVA_SUFFIX = "$. I hope"
_ANSWER_IS = "he answer is"
_PROGRAM_OUTPUT_FENCE = "```output"
_LAST_NUMBER = re.compile(r"-?\d*\.?\d+")
_TEXT_AND = re.compile(r"\\text\{\s*and\s*\}")
_COMMA_LIST_PHRASE = "separated by commas"


def extract_boxed_answers(text: str) -> list[str]:
    """Contents of every `boxed{...}`, brace-matched, in order of appearance.

    As in the official code, each box is searched only up to the next `boxed{` (so for nested
    boxes only the innermost is read), an unclosed box gives nothing, and a box closed by `}%`
    keeps its closing brace. The unbraced form `\\boxed 5` gives nothing, as there.
    """
    pieces = text.split("boxed{")
    answers: list[str] = []
    for piece in pieces[1:]:
        depth = 0
        for i, ch in enumerate(piece):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth < 0:
                    closed_by_percent = i + 1 < len(piece) and piece[i + 1] == "%"
                    answers.append(piece[: i + 1] if closed_by_percent else piece[:i])
                    break
    return answers


def extract_program_output(text: str) -> str:
    """The stripped contents of the last ```` ```output ```` block, or "" if there is none."""
    if _PROGRAM_OUTPUT_FENCE not in text:
        return ""
    tail = text.split(_PROGRAM_OUTPUT_FENCE)[-1]
    return tail.split("```")[0].strip()


def extract_last_number(text: str) -> str:
    """The last number in `text` once commas are removed (`1,234.5` reads as `1234.5`), or ""."""
    numbers = _LAST_NUMBER.findall(text.replace(",", ""))
    return numbers[-1] if numbers else ""


def extract_raw_answers(text: str) -> list[str]:
    """The un-normalised answer candidates of `text`, by the official priority order.

    1. `final answer is $...$. I hope` (Minerva format);
    2. else, if "boxed" occurs, every box (possibly none: there is no fallback after this);
    3. else the text after the last `he answer is`;
    4. else the last ```` ```output ```` block;
    5. else the last number.
    """
    if _MINERVA_PREFIX in text and _MINERVA_SUFFIX in text:
        after = text.split(_MINERVA_PREFIX, 1)[1]
        return [after.split(_MINERVA_SUFFIX, 1)[0].strip()]
    if "boxed" in text:
        return extract_boxed_answers(text)
    if _ANSWER_IS in text:
        return [text.split(_ANSWER_IS)[-1].strip()]
    program_output = extract_program_output(text)
    if program_output:
        return [program_output]
    last_number = extract_last_number(text)
    return [last_number] if last_number else []


def clean_extracted_answer(raw: str) -> str:
    """First line only, without leading `:` and trailing `.` or `/`, then `strip_string`."""
    first_line = raw.strip().split("\n")[0]
    return strip_string(first_line.lstrip(":").rstrip(".").rstrip("/"))


def extract_math_answer(response: str, question: str | None = None) -> list[str]:
    """All normalised final answers in `response`, as a list (empty when there is none).

    A list, because MATH answers can be several values: every box counts, a question that asks
    for values "separated by commas" splits a comma list (unless it has brackets, i.e. is a
    tuple or interval), and `\\text{ and }` splits too. Grading the same routine on the gold
    solution gives the gold list (spec §3).
    """
    asks_for_comma_list = question is not None and _COMMA_LIST_PHRASE in question
    answers: list[str] = []
    for raw in extract_raw_answers(response):
        answer = clean_extracted_answer(raw)
        if asks_for_comma_list and not any(ch in answer for ch in "()[]"):
            answers.extend(part.strip() for part in answer.split(","))
        elif _TEXT_AND.search(answer):
            answers.extend(part.strip() for part in _TEXT_AND.split(answer))
        else:
            answers.append(answer.strip())
    return answers

