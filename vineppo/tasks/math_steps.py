"""Reasoning-step boundaries for MATH solutions (spec §1.2, "MATH" heuristic, steps 1-6).

`split_math_steps(text)` returns character offsets ``o`` with ``o[0] == 0``,
``o[-1] == len(text)`` and ``o`` non-decreasing; step ``i`` is ``text[o[i]:o[i + 1]]``.
The steps concatenate back to ``text`` exactly. The empty string gives ``[0, 0]``: one
empty step, so that callers can always rely on at least one step.

The aim is the same offsets as the paper's splitter (``split_solution_inplace`` in
McGill-NLP/VinePPO, ``src/treetune/tasks/math_extract_steps_inplace.py``). This is an
independent re-implementation; on the 12,500 MATH gold solutions (train + test) it gives
identical offsets for every one (checked against the official code as an oracle).

Which function does which spec step:

- step 1: ``_mask_math`` (with the ``_find_*`` helpers) hides math spans behind 60-char tokens.
- step 2: ``_sentence_and_newline_cuts`` cuts after sentence ends and before each newline.
- step 3: ``_merge_short_sentences``: a lone newline, or a piece under 20 chars not ending in
  ".", joins the next piece.
- step 4: ``_cut_after_closing_period`` cuts after math ending in ``.$``, ``.$$``, ``.\\)`` or
  ``.\\]``; ``_merge_short_after_period_cuts``: a part under 20 chars without such an ending
  joins the next (the last one joins the previous).
- step 5: ``_cut_newlines_in_math`` unmasks and cuts before each newline inside math;
  ``_merge_openings_and_slivers``: a bare opening delimiter or a part under 3 chars joins the
  next (the last one joins the previous).
- step 6: ``_bisect_long_part`` halves parts over 100 chars near the middle, with
  ``_language_cut`` outside math (halves >= 40 chars) or else ``_math_cut`` (halves >= 20).

Details that the offsets depend on and that this module reproduces on purpose:

- Masking runs pattern by pattern, each pass on the output of the previous one, and every
  masked span counts as exactly 60 characters wherever the paper measures the masked text
  (the < 20 test of step 3 and the "nearest the middle" choice of step 6's language cut).
- Step 4's "short" test looks at the *unmasked* length and at the four math endings only, so a
  short plain sentence such as "Thus." is merged forward too.
- In step 5, if the same math text occurs twice in one part, only its first occurrence is cut
  at newlines (the paper substitutes all copies of a placeholder at once).
- Step 6 re-masks every sub-part from scratch, so a sub-part that starts inside a formula is
  masked differently from the whole text. It also keeps the paper's "math range": after a cut
  inside math, a later sub-part whose start (relative to the part) lies in
  ``[smallest math cut, largest sub-part length)`` - both measured relative to the sub-part
  that was cut, a quirk kept as is - skips the language cut.

Where this module departs from the paper (marked "DEPARTURE" in the code):

- The paper crashes (AssertionError) when a text has only one part and that part is judged
  too short in step 4 or 5 (e.g. any solution under 20 characters), because it then merges
  the part "into the previous one" that does not exist. Here the part simply stays: the
  result is one step ``[0, len(text)]``. For the empty string the paper returns ``[0]``
  (no step at all); here it is ``[0, 0]``.
- The paper crashes when one masked span contains another (e.g. a bare
  ``\\begin{align*}...\\end{align*}`` with ``$x$`` inside, or an unbalanced ``$`` that pairs
  across a ``\\[...\\]``), because its placeholders are then only partly restored. Here the
  outer span simply covers the inner one.
- The paper raises KeyError if the text itself contains a string shaped like its placeholders;
  here spans are tracked by position, so the input's content cannot be confused with them.
- Delimiter matching is done with ``str.find`` scans equivalent to the paper's lazy regexes,
  but linear-time, so hostile inputs (thousands of unclosed ``\\begin{``) do not take minutes.
  Only ``\\begin{name}`` needs a scan per distinct unclosed name; after about 20 text lengths
  of such scanning, the remaining ``\\begin{`` stay unmasked (never reached by real text).
- As a last resort, any unexpected internal error yields ``[0, len(text)]``: the function
  never raises for a ``str`` argument.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from typing import Callable, NamedTuple

__all__ = ["MAX_STEP_CHARS", "split_math_steps"]

#: parts longer than this are bisected (step 6)
MAX_STEP_CHARS = 100

# Step 1: stand-in for a masked span. Its length matters (60, as in the paper); its characters
# must not take part in any later pattern: no whitespace, ".", ",", ":", "$", "\\", brackets or
# braces, and non-word characters at both ends (the sentence regex uses \b and [A-Z]).
_TOKEN = "<" + "#" * 58 + ">"
_TOKEN_LEN = len(_TOKEN)

# Step 2: a sentence ends after "." followed by whitespace and an ASCII capital, unless the word
# before the period is a single letter ("e.g. X", "x. Then") or two letters after whitespace
# ("Mr. Smith", "vs. The").
_SENTENCE_END = re.compile(r"(?<=\.)(?<!\b[A-Za-z]\.)(?<!\s[A-Za-z]{2}\.)(?=\s+[A-Z])")

# Step 3: shorter pieces that do not end in "." are merged forward.
_SHORT_SENTENCE = 20
# Step 4: math endings that close a sentence; shorter pieces without one are merged.
_CLOSING_PERIODS = (".$", ".$$", ".\\)", ".\\]")
_SHORT_AFTER_PERIOD_CUTS = 20
# Step 5: slivers shorter than this are merged forward.
_SLIVER = 3
_BARE_OPENINGS = frozenset({"$", "$$", "\\(", "\\[", "[asy]"})
# Step 6: separators outside math (regex, cut offset from the match start) and inside math
# (literal, cut right after it), each list tried in order; minimum half lengths.
_LANGUAGE_SEPARATORS = (
    (re.compile(","), 1),
    (re.compile(r"\sand\s"), 4),
    (re.compile(":"), 1),
    (re.compile(r"\sto\s"), 3),
)
_MATH_SEPARATORS = (",$", ",\\)", ",\\]", "=", "\\equiv", "+", "\\cancelto")
_MIN_LANGUAGE_HALF = 40
_MIN_MATH_HALF = 20


def split_math_steps(text: str) -> list[int]:
    """Step boundaries of a MATH solution: offsets ``o``, step ``i`` = ``text[o[i]:o[i+1]]``.

    ``o[0] == 0``, ``o[-1] == len(text)``, non-decreasing; ``""`` gives ``[0, 0]``.
    Never raises for a ``str``; a non-``str`` argument is a TypeError.
    """
    if not isinstance(text, str):
        raise TypeError(f"split_math_steps expects str, got {type(text).__name__}")
    try:
        return _split(text)
    except Exception:  # DEPARTURE: the paper can raise; we fall back to a single step.
        return [0, len(text)]


def _split(text: str) -> list[int]:
    """The pipeline of steps 1-6, without the safety net of `split_math_steps`."""
    if not text:
        return [0, 0]  # DEPARTURE: the paper returns [0].
    masked = _mask_math(text)
    bounds = _sentence_and_newline_cuts(masked.text)
    bounds = _merge_short_sentences(masked.text, bounds)
    bounds = _cut_after_closing_period(text, masked, bounds)
    bounds = _merge_short_after_period_cuts(text, bounds)
    bounds = _cut_newlines_in_math(text, masked, bounds)
    bounds = _merge_openings_and_slivers(text, bounds)
    result = [0]
    for start, end in zip(bounds, bounds[1:]):
        if end - start > MAX_STEP_CHARS:
            result.extend(start + cut for cut in _bisect_long_part(text[start:end])[1:])
        else:
            result.append(end)
    return result


# ---------------------------------------------------------------------------------------------
# Step 1: masking math spans
# ---------------------------------------------------------------------------------------------


class _Masked(NamedTuple):
    """Text with math spans replaced by `_TOKEN`, and where each span came from."""

    text: str
    #: start of each token in `text`, ascending
    token_starts: list[int]
    #: (start, end) of each token's span in the original text
    spans: list[tuple[int, int]]
    #: offset_shift[k]: original minus masked position after the first k tokens
    offset_shift: list[int]

    def to_original(self, pos: int) -> int:
        """Original offset of masked offset `pos` (which must not fall inside a token)."""
        return pos + self.offset_shift[bisect_left(self.token_starts, pos)]


def _find_delimited(opening: str, closing: str) -> Callable[[str], list[tuple[int, int]]]:
    """A finder for `opening ... closing` with the shortest body (the lazy regex `o.*?c`)."""

    def find(s: str) -> list[tuple[int, int]]:
        spans = []
        pos = 0
        while True:
            start = s.find(opening, pos)
            if start < 0:
                break
            close = s.find(closing, start + len(opening))
            if close < 0:
                break  # no later opening can find a closing either
            pos = close + len(closing)
            spans.append((start, pos))
        return spans

    return find


def _find_inline_dollars(s: str) -> list[tuple[int, int]]:
    """`$...$` spans: an unescaped opening `$`, a body of at least one character, and the first
    closing `$` that is neither escaped nor followed by another `$`."""
    spans = []
    pos = 0
    n = len(s)
    while True:
        start = s.find("$", pos)
        if start < 0:
            break
        if start > 0 and s[start - 1] == "\\":
            pos = start + 1
            continue
        close = s.find("$", start + 2)
        while close >= 0 and (s[close - 1] == "\\" or (close + 1 < n and s[close + 1] == "$")):
            close = s.find("$", close + 1)
        if close < 0:
            break  # valid closings do not depend on the opening: none for later ones either
        spans.append((start, close + 1))
        pos = close + 1
    return spans


def _find_environments(s: str) -> list[tuple[int, int]]:
    """`\\begin{name}...\\end{name}` spans (any name, shortest body).

    DEPARTURE (pathological inputs only): every distinct unclosed name costs a scan of the
    rest of the text, so once about 20 text lengths' worth of characters have been scanned,
    the search stops and the later `\\begin{` stay unmasked (a match found past the budget is
    dropped too). Real solutions never come close to this budget.
    """
    spans = []
    pos = 0
    unclosed: set[str] = set()
    budget = 20 * len(s) + 100_000
    name_end = next_end = -1  # cached: next "}" and next "\\end{" (both only move forward)
    while True:
        start = s.find("\\begin{", pos)
        if start < 0:
            break
        if name_end < start + 7:
            name_end = s.find("}", start + 7)
        if name_end >= 0 and next_end <= name_end:
            next_end = s.find("\\end{", name_end + 1)
        if name_end < 0 or next_end < 0:
            break  # nothing after this opening can close it or any later one
        name = s[start + 7 : name_end]
        if name in unclosed:
            close = -1
        else:
            close = s.find("\\end{" + name + "}", name_end + 1)
            # Characters examined: up to the match (disjoint, so at most len(s) in total for
            # the matches) or, for an unclosed name, the whole rest of the text.
            budget -= (close if close >= 0 else len(s)) - start
            if budget < 0:
                break
        if close < 0:
            unclosed.add(name)  # a later opening with this name cannot be closed either
            pos = start + 1
            continue
        pos = close + len(name) + 6
        spans.append((start, pos))
    return spans


# Step 1 pattern order (each pass sees the previous passes' tokens).
_MASK_FINDERS: tuple[Callable[[str], list[tuple[int, int]]], ...] = (
    _find_delimited("[asy]", "[/asy]"),
    _find_delimited("$\\begin{tabular}", "\\end{tabular}$"),
    _find_delimited("\\begin{tabular}", "\\end{tabular}"),
    _find_delimited("\\(", "\\)"),
    _find_delimited("\\[", "\\]"),
    _find_delimited("$$", "$$"),
    _find_inline_dollars,
    _find_environments,
)


def _replace_spans(
    masked_text: str,
    tokens: list[tuple[int, int, int]],
    found: list[tuple[int, int]],
) -> tuple[str, list[tuple[int, int, int]]]:
    """Replace the `found` spans of `masked_text` by tokens.

    `tokens` holds (masked start, original start, original end) of the existing tokens. A token
    inside a found span is absorbed by it (DEPARTURE: the paper crashes on such nesting).
    """
    pieces: list[str] = []
    out: list[tuple[int, int, int]] = []
    new_len = 0  # length of the new masked text built so far
    prev = 0  # position in masked_text up to which pieces were copied
    shift = 0  # original minus masked_text offset, after the tokens passed so far
    k = 0
    for start, end in found:
        while k < len(tokens) and tokens[k][0] < start:
            t_start, o_start, o_end = tokens[k]
            out.append((new_len + t_start - prev, o_start, o_end))
            shift += o_end - o_start - _TOKEN_LEN
            k += 1
        o_start = start + shift
        while k < len(tokens) and tokens[k][0] < end:
            shift += tokens[k][2] - tokens[k][1] - _TOKEN_LEN
            k += 1
        o_end = end + shift
        pieces.append(masked_text[prev:start])
        new_len += start - prev
        out.append((new_len, o_start, o_end))
        pieces.append(_TOKEN)
        new_len += _TOKEN_LEN
        prev = end
    for t_start, o_start, o_end in tokens[k:]:
        out.append((new_len + t_start - prev, o_start, o_end))
    pieces.append(masked_text[prev:])
    return "".join(pieces), out


def _mask_math(text: str) -> _Masked:
    """Step 1: hide [asy], tabular, \\( \\), \\[ \\], $$ $$, $ $ and \\begin..\\end spans."""
    masked_text = text
    tokens: list[tuple[int, int, int]] = []
    for finder in _MASK_FINDERS:
        found = finder(masked_text)
        if found:
            masked_text, tokens = _replace_spans(masked_text, tokens, found)
    shifts = [0]
    for _, o_start, o_end in tokens:
        shifts.append(shifts[-1] + (o_end - o_start) - _TOKEN_LEN)
    return _Masked(
        text=masked_text,
        token_starts=[t[0] for t in tokens],
        spans=[(t[1], t[2]) for t in tokens],
        offset_shift=shifts,
    )


# ---------------------------------------------------------------------------------------------
# Steps 2-5: cutting and merging (bounds are sorted offsets, first 0, last the text length)
# ---------------------------------------------------------------------------------------------


def _absorb_forward(
    bounds: list[int], too_short: Callable[[int, int], bool], last_joins_previous: bool
) -> list[int]:
    """A part judged `too_short(start, end)` absorbs the next part (and is judged again).

    With `last_joins_previous`, a too-short last part joins the part before it instead. A
    too-short only part stays as it is (DEPARTURE: the paper crashes there).
    """
    out = [bounds[0]]
    for cut in bounds[1:-1]:
        if not too_short(out[-1], cut):
            out.append(cut)
    end = bounds[-1]
    if last_joins_previous and len(out) > 1 and too_short(out[-1], end):
        out.pop()
    out.append(end)
    return out


def _sentence_and_newline_cuts(masked_text: str) -> list[int]:
    """Step 2: cut after each sentence end and before each newline (on the masked text)."""
    cuts = {m.start() for m in _SENTENCE_END.finditer(masked_text)}
    pos = masked_text.find("\n")
    while pos >= 0:
        cuts.add(pos)
        pos = masked_text.find("\n", pos + 1)
    # A cut at 0 would leave an empty first piece, which step 3 merges forward at once.
    cuts.discard(0)
    return [0, *sorted(cuts), len(masked_text)]


def _merge_short_sentences(masked_text: str, bounds: list[int]) -> list[int]:
    """Step 3: a lone "\\n", or a piece under 20 masked chars not ending in ".", joins the next.

    The last piece is never merged.
    """

    def too_short(start: int, end: int) -> bool:
        lone_newline = end - start == 1 and masked_text[start] == "\n"
        ends_sentence = end > start and masked_text[end - 1] == "."
        return lone_newline or (end - start < _SHORT_SENTENCE and not ends_sentence)

    return _absorb_forward(bounds, too_short, last_joins_previous=False)


def _cut_after_closing_period(text: str, masked: _Masked, masked_bounds: list[int]) -> list[int]:
    """Step 4a: also cut after every math span ending in `.$`, `.$$`, `.\\)` or `.\\]`.

    Takes bounds on the masked text, returns bounds on the original text.
    """
    cuts = {masked.to_original(b) for b in masked_bounds}
    cuts.update(end for start, end in masked.spans if text.endswith(_CLOSING_PERIODS, start, end))
    return sorted(cuts)


def _merge_short_after_period_cuts(text: str, bounds: list[int]) -> list[int]:
    """Step 4b: a part under 20 chars not ending like `.$` (etc.) joins the next; last: previous."""

    def too_short(start: int, end: int) -> bool:
        return end - start < _SHORT_AFTER_PERIOD_CUTS and not text.endswith(
            _CLOSING_PERIODS, start, end
        )

    return _absorb_forward(bounds, too_short, last_joins_previous=True)


def _cut_newlines_in_math(text: str, masked: _Masked, bounds: list[int]) -> list[int]:
    """Step 5a: cut before every newline inside a math span.

    Within one part, a math text that already occurred earlier in the same part is not cut.
    """
    cuts = set(bounds)
    spans = masked.spans
    k = 0
    for part_start, part_end in zip(bounds, bounds[1:]):
        seen: set[str] = set()
        while k < len(spans) and spans[k][0] < part_end:
            start, end = spans[k]
            k += 1
            if start < part_start:
                continue  # cannot happen: spans never straddle a cut
            newline = text.find("\n", start, end)
            if newline < 0:
                continue
            body = text[start:end]
            if body in seen:
                continue
            seen.add(body)
            while newline >= 0:
                cuts.add(newline)
                newline = text.find("\n", newline + 1, end)
    return sorted(cuts)


class _StrippedBounds:
    """Incrementally tracks where `text[start:end].strip()` lies as `end` grows (keeps step 5b
    linear even when a bare opening absorbs thousands of newline pieces)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.start = self.end = -1
        self.first = self.last = -1  # first / last non-space index, -1 if none yet

    def update(self, start: int, end: int) -> tuple[int, int]:
        text = self.text
        if start != self.start or end < self.end:
            self.start, self.end, self.first, self.last = start, start, -1, -1
        for i in range(end - 1, self.end - 1, -1):
            if not text[i].isspace():
                self.last = i
                break
        if self.first < 0:
            for i in range(self.end, end):
                if not text[i].isspace():
                    self.first = i
                    break
        self.end = end
        return self.first, self.last


def _merge_openings_and_slivers(text: str, bounds: list[int]) -> list[int]:
    """Step 5b: a part that is a bare opening delimiter once stripped (`$`, `$$`, `\\(`, `\\[`,
    `\\begin{...}`, `[asy]`), or shorter than 3 chars (e.g. "\\n"), joins the next; last: previous.
    """
    stripped = _StrippedBounds(text)

    def too_short(start: int, end: int) -> bool:
        if end - start < _SLIVER:
            return True
        first, last = stripped.update(start, end)
        if first < 0:
            return False
        if last - first < 5:
            return text[first : last + 1] in _BARE_OPENINGS
        return text.startswith("\\begin{", first) and text.find("}", first + 7, last + 1) == last

    return _absorb_forward(bounds, too_short, last_joins_previous=True)


# ---------------------------------------------------------------------------------------------
# Step 6: bisecting long parts
# ---------------------------------------------------------------------------------------------


def _nearest_middle(positions: list[int], length: int) -> int:
    """The position closest to length / 2 (the leftmost one on a tie)."""
    best, best_gap = positions[0], abs(2 * positions[0] - length)
    for pos in positions[1:]:
        gap = abs(2 * pos - length)
        if gap < best_gap:
            best, best_gap = pos, gap
    return best


def _language_cut(part: str) -> int | None:
    """Cut outside math on `,`, ` and `, `:`, ` to ` (first separator kind that works).

    The middle is found on the masked sub-part (math counts as 60 chars); both unmasked halves
    must have at least 40 chars.
    """
    masked = _mask_math(part)
    for regex, offset in _LANGUAGE_SEPARATORS:
        positions = [m.start() + offset for m in regex.finditer(masked.text)]
        if not positions:
            continue
        cut = masked.to_original(_nearest_middle(positions, len(masked.text)))
        if min(cut, len(part) - cut) >= _MIN_LANGUAGE_HALF:
            return cut
    return None


def _math_cut(part: str) -> int | None:
    """Cut right after `,$`, `,\\)`, `,\\]`, `=`, `\\equiv`, `+`, `\\cancelto` (first kind that
    works), nearest the middle; both halves must have at least 20 chars."""
    for separator in _MATH_SEPARATORS:
        positions = []
        pos = part.find(separator)
        while pos >= 0:
            positions.append(pos + len(separator))
            pos = part.find(separator, pos + len(separator))
        if not positions:
            continue
        cut = _nearest_middle(positions, len(part))
        if min(cut, len(part) - cut) >= _MIN_MATH_HALF:
            return cut
    return None


def _bisect_long_part(part: str) -> list[int]:
    """Step 6: recursively halve sub-parts longer than 100 chars; offsets within `part`.

    Sub-parts are visited depth first, left half first. The language cut is skipped for a
    sub-part whose start lies in the "math range" (see the module docstring).
    """
    math_lo, math_hi = -1, 0
    bounds = [0]
    pending = [(0, len(part))]
    while pending:
        start, end = pending.pop()
        if end - start > MAX_STEP_CHARS:
            sub = part[start:end]
            cut = None
            if not math_lo <= start < math_hi:
                cut = _language_cut(sub)
            if cut is None:
                cut = _math_cut(sub)
                if cut is not None:
                    # The paper's bookkeeping, kept as is: relative to `sub`, not to `part`.
                    math_lo = cut if math_lo == -1 else min(math_lo, cut)
                    math_hi = max(math_hi, len(sub))
            if cut is not None:
                pending.append((start + cut, end))
                pending.append((start, start + cut))
                continue
        bounds.append(end)
    return bounds
