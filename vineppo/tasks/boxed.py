"""`\\boxed{...}` final answers for GSM8K-style numeric tasks (the format of today's instruct models).

Kept apart from `vineppo.tasks.gsm8k` (the paper's `####` format) so the two extraction rules stay
independent: the paper's grader is untouched, and a numeric task graded on boxed answers only
swaps the extraction step (`extract_final_answer`). MATH has its own extraction
(`vineppo.tasks.math_grading`) and does not use this module.
"""

from __future__ import annotations

from typing import Literal

AnswerFormat = Literal["hashes", "boxed", "auto"]
ANSWER_FORMATS: tuple[str, ...] = ("hashes", "boxed", "auto")

_BOXED = ("\\boxed", "\\fbox")


def braced_content(text: str, open_index: int) -> str | None:
    """The raw text inside the `{...}` that opens at `text[open_index]` (nested braces matched);
    None when it never closes."""
    depth = 0
    for j in range(open_index, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1:j]
    return None


def extract_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) of `text`, braces matched and
    stripped; `\\boxed 18` (no braces) gives "18". None when there is none or it never closes."""
    if not isinstance(text, str):
        return None
    start, name = max(((text.rfind(n), n) for n in _BOXED), key=lambda x: x[0])
    if start < 0:
        return None
    i = start + len(name)
    if text.startswith("{", i):
        inner = braced_content(text, i)
        return None if inner is None else inner.strip()
    rest = text[i:]
    if not rest[:1].isspace():
        return None  # e.g. "\\boxedx": not a box
    word = rest.split(None, 1)
    return word[0].rstrip("$.") if word else None


def strip_boxed_decorations(answer: str) -> str:
    """Drop what models often wrap a boxed number in: `\\text{...}`, `$`, `\\!`, `\\,`, and a
    trailing `.`, so `\\boxed{\\$18}` and `\\boxed{18.}` read as "18". Other text is kept as is
    (and then graded like a `####` answer: a number compares by value, anything else as a string)."""
    a = answer.strip()
    if a.startswith("\\text{") and a.endswith("}"):
        a = a[len("\\text{"):-1]
    for junk in ("\\$", "$", "\\!", "\\,", "\\ "):
        a = a.replace(junk, "")
    a = a.strip()
    if a.endswith(".") and a[:-1].replace(",", "").replace(".", "").isdigit():
        a = a[:-1]
    return a.strip()


def extract_final_answer(response: str, answer_format: str, extract_hashes) -> str | None:
    """The final answer of `response` in `answer_format`:
    "hashes": `extract_hashes(response)` (the paper's text after the last `####`);
    "boxed": the last `\\boxed{}`; "auto": the last `\\boxed{}` if there is one, else `####`."""
    if answer_format == "hashes":
        return extract_hashes(response)
    boxed = extract_boxed(response)
    if boxed is not None:
        return strip_boxed_decorations(boxed)
    if answer_format == "boxed":
        return None
    if answer_format == "auto":
        return extract_hashes(response)
    raise ValueError(f"unknown answer format {answer_format!r}; valid: {', '.join(ANSWER_FORMATS)}")
