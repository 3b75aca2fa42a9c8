"""Tests for vineppo.tasks.math_steps.split_math_steps (spec §1.2, MATH steps 1-6).

(a) every MATH gold solution (train + test) gives a valid partition that joins back to the text;
(b) hand-checked cases, at least one per rule;
(c) hostile and random inputs never raise and give valid partitions, in reasonable time;
(d) golden offsets for real rows, produced by the paper's official splitter
    (`split_solution_inplace`, McGill-NLP/VinePPO), so a regression shows up without it.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from vineppo.tasks.math_steps import MAX_STEP_CHARS, _split, split_math_steps

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MATH_DIR = DATA_DIR / "math"


def _load_rows(split: str) -> list[dict]:
    path = MATH_DIR / f"{split}.jsonl"
    if not path.is_file():
        pytest.fail(
            f"MATH data missing: expected {path} (the shared data directory is "
            f"<repo parent>/shared/data/math/{{train,test}}.jsonl)"
        )
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def math_rows() -> dict[str, list[dict]]:
    return {split: _load_rows(split) for split in ("train", "test")}


def _assert_partition(text: str, offsets: list[int]) -> None:
    assert isinstance(offsets, list) and len(offsets) >= 2, offsets
    assert all(isinstance(o, int) for o in offsets)
    assert offsets[0] == 0 and offsets[-1] == len(text)
    assert all(a <= b for a, b in zip(offsets, offsets[1:])), offsets
    assert "".join(text[a:b] for a, b in zip(offsets, offsets[1:])) == text


def _steps(text: str) -> list[str]:
    o = split_math_steps(text)
    return [text[a:b] for a, b in zip(o, o[1:])]


# --------------------------------------------------------------------------------------------
# (a) every gold solution
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["test", "train"])
def test_all_gold_solutions_partition(math_rows, split):
    rows = math_rows[split]
    assert len(rows) == {"test": 500, "train": 12000}[split]
    for row in rows:
        text = row["solution"]
        # `_split` has no safety net: this also checks that no real row needs the fallback.
        offsets = _split(text)
        _assert_partition(text, offsets)
        # Every step is non-empty for real solutions.
        assert all(a < b for a, b in zip(offsets, offsets[1:])), row["unique_id"]


# --------------------------------------------------------------------------------------------
# (b) hand-checked cases, one or more per rule
# --------------------------------------------------------------------------------------------


def test_empty_and_tiny_texts():
    assert split_math_steps("") == [0, 0]  # one empty step (the paper returns [0])
    assert split_math_steps("x = 5") == [0, 5]  # the paper crashes: one part, too short
    assert split_math_steps("\n") == [0, 1]
    assert split_math_steps("$") == [0, 1]


def test_non_str_is_a_type_error():
    with pytest.raises(TypeError):
        split_math_steps(None)  # type: ignore[arg-type]


def test_step2_sentence_split():
    assert _steps("We first compute the sum of all terms. Then we divide it by their count.") == [
        "We first compute the sum of all terms.",
        " Then we divide it by their count.",
    ]
    # A number before the period is not an abbreviation.
    assert split_math_steps("The first number we get is 12. Then the second one is 13 here.") == [
        0,
        30,
        62,
    ]
    # No capital letter after the space: no split.
    text = "We first compute the sum of all terms. then we divide it by their count."
    assert split_math_steps(text) == [0, len(text)]


def test_step2_abbreviation_guards():
    # a single letter before the period
    text = "The point moves to position x. Then it moves back to its start."
    assert split_math_steps(text) == [0, len(text)]
    # two letters after whitespace
    text = "We follow the hint of Mr. Smith and compute the required area."
    assert split_math_steps(text) == [0, len(text)]
    # three letters are not guarded
    assert _steps("This was first noticed by Mrs. Smith in her class. Then we compute.") == [
        "This was first noticed by Mrs.",
        " Smith in her class. Then we compute.",
    ]


def test_step2_3_newline_goes_with_next_piece_and_lone_newline_merges():
    text = "First line of the solution here\n\nSecond line of the solution here"
    assert _steps(text) == [
        "First line of the solution here",
        "\n\nSecond line of the solution here",
    ]


def test_step3_short_piece_without_period_merges_forward():
    text = "Short line\nThis is a longer line of the solution text"
    assert split_math_steps(text) == [0, len(text)]
    # Long enough pieces stay apart.
    assert _steps("A line that is long enough\nAnother line that is long enough") == [
        "A line that is long enough",
        "\nAnother line that is long enough",
    ]


def test_step4_short_plain_sentence_merges_too():
    # "Done." ends in "." (kept by step 3) but not in a math ending (merged by step 4).
    text = "Done.\nNext line that is long enough to stand alone"
    assert split_math_steps(text) == [0, len(text)]


def test_step4_split_after_formula_ending_in_period():
    assert _steps("We know that $x = 5.$ Hence the answer follows from it.") == [
        "We know that $x = 5.$",
        " Hence the answer follows from it.",
    ]
    assert _steps("It follows that \\[x^2 = 4.\\] So the two roots are $2$ and $-2$ here.") == [
        "It follows that \\[x^2 = 4.\\]",
        " So the two roots are $2$ and $-2$ here.",
    ]
    # A short piece ending like ".$" is not merged (9 chars < 20).
    assert _steps("So $y=2.$ Then we are done with the whole problem.") == [
        "So $y=2.$",
        " Then we are done with the whole problem.",
    ]
    # Without the math ending there is no split at all ("$x = 5$" then a lowercase word).
    text = "We know that $x = 5$ hence the answer follows from it."
    assert split_math_steps(text) == [0, len(text)]


def test_step5_newlines_inside_display_math_and_delimiter_merges():
    # "$$" alone after the first cut is glued to the previous text (it is not a whole part
    # there), the closing "\n$$" is a bare delimiter and joins the next line.
    assert _steps("We compute:\n$$\na = 1 + 2 + 3 + 4\n$$\nso the value of a is ten.") == [
        "We compute:\n$$",
        "\na = 1 + 2 + 3 + 4",
        "\n$$\nso the value of a is ten.",
    ]
    assert _steps(
        "Expanding gives\n\\[\n(x+1)^2 = x^2 + 2x + 1,\n\\]\nwhich is the identity we need."
    ) == [
        "Expanding gives\n\\[",
        "\n(x+1)^2 = x^2 + 2x + 1,",
        "\n\\]",
        "\nwhich is the identity we need.",
    ]
    assert _steps(
        "Hence \\begin{align*}\nx &= 1 + 1 \\\\\ny &= 2 + 2\n\\end{align*} as claimed before."
    ) == [
        "Hence \\begin{align*}",
        "\nx &= 1 + 1 \\\\",
        "\ny &= 2 + 2",
        "\n\\end{align*} as claimed before.",
    ]


def test_step5_bare_opening_part_joins_next():
    # The part "\n\\[" (a bare opening once stripped) absorbs the next line.
    text = "The sum of the first two values\n\\[\nx + y = 10\n\\]\nis ten, as stated."
    steps = _steps(text)
    assert all(s.strip() not in ("$", "$$", "\\(", "\\[", "[asy]") for s in steps)
    assert steps == [
        "The sum of the first two values",
        "\n\\[\nx + y = 10",
        "\n\\]\nis ten, as stated.",
    ]


def test_step5_repeated_math_in_one_part_is_cut_once():
    # Step 4 merges the first (13-char) part into the second, so both copies of "$$\nx\n$$"
    # end up in one part; as in the paper, only the first copy is cut at its newlines.
    text = "Write\n$$\nx\n$$\nthen again\n$$\nx\n$$\nwhich ends the argument here."
    assert split_math_steps(text) == [0, 8, 32, 62]


def test_step6_bisection_outside_math():
    text = (
        "Since the triangle is isosceles with two equal sides of length five, "
        "the base angles are equal and we can find them."
    )
    assert len(text) > MAX_STEP_CHARS
    assert _steps(text) == [
        "Since the triangle is isosceles with two equal sides of length five,",
        " the base angles are equal and we can find them.",
    ]


def test_step6_language_guard_needs_halves_of_40():
    # The only comma leaves an 11-char half: no split; no other separator either.
    text = (
        "Consider the rather long expression that we obtained in the previous step "
        "of our solution, as before."
    )
    assert len(text) > MAX_STEP_CHARS
    assert split_math_steps(text) == [0, len(text)]
    # Same text with " and " near the middle: the comma is still refused, " and " is used.
    text = (
        "Consider the rather long expression that we have obtained and simplified "
        "in the previous step, as before."
    )
    assert len(text) > MAX_STEP_CHARS
    assert _steps(text) == [
        "Consider the rather long expression that we have obtained and",
        " simplified in the previous step, as before.",
    ]


def test_step6_commas_inside_math_are_hidden_then_math_split():
    # The comma in f(a, b) is masked; no language separator works, so "=" splits the formula.
    text = (
        "We now simplify the expression $f(a, b) = a^2 + b^2 + 2ab + a + b + 1$ "
        "which we wrote down in the first step."
    )
    assert split_math_steps(text) == [0, 41, len(text)]


def test_step6_bisection_inside_math_and_guard():
    left = "+".join(f"a_{{{i}}}" for i in range(1, 13))
    right = "+".join(f"b_{{{i}}}" for i in range(1, 13))
    text = f"${left}={right}$"
    assert len(text) > MAX_STEP_CHARS
    assert _steps(text) == [f"${left}=", f"{right}$"]
    # The only "=" leaves a 3-char half: no split.
    text = "$x=" + "y" * 120 + "$"
    assert split_math_steps(text) == [0, len(text)]


def test_step6_recursive_bisection_keeps_parts_short_when_possible():
    text = ", ".join(["the quick brown fox jumps over the lazy dog"] * 12) + "."
    steps = _steps(text)
    assert len(steps) > 4
    assert all(len(s) <= MAX_STEP_CHARS for s in steps)


def test_step1_asy_is_masked():
    # Inside [asy] ... [/asy] the "here. Second" is not a sentence end ...
    text = (
        'We draw the figure below [asy]label("First point here. Second point");[/asy]'
        " and continue."
    )
    assert split_math_steps(text) == [0, len(text)]
    # ... but without the tags it is.
    text = 'We draw the figure below label("First point here. Second point"); and continue.'
    assert _steps(text) == [
        'We draw the figure below label("First point here.',
        ' Second point"); and continue.',
    ]


def test_step1_inline_math_hides_periods_and_escaped_dollars_are_text():
    # "1. A" is a sentence end in text ...
    assert _steps("The total cost that we found is 1. A and more words to make this long.") == [
        "The total cost that we found is 1.",
        " A and more words to make this long.",
    ]
    # ... but not inside $...$
    text = "The total cost that we found is $1. A$ and more words to make this long."
    assert split_math_steps(text) == [0, len(text)]
    # An escaped `\$` neither opens nor closes math, so "5. Then" stays a sentence end.
    assert _steps("The price of the item is \\$5. Then the price is $6$ dollars more.") == [
        "The price of the item is \\$5.",
        " Then the price is $6$ dollars more.",
    ]


def test_nested_math_does_not_crash():
    # The paper crashes when a bare environment contains $...$ (nested placeholders).
    text = (
        "Thus\n\\begin{align*}\nx &= 1 \\text{ since $y=2$}\\\\\nz &= 3\n\\end{align*}"
        "\nand we are done."
    )
    assert _split(text) == [0, 19, 48, 55, 85]  # the outer environment covers the inner $...$


# --------------------------------------------------------------------------------------------
# (c) hostile and random inputs
# --------------------------------------------------------------------------------------------

_ATOMS = [
    "$", "$$", "\\$", "\\(", "\\)", "\\[", "\\]", "\\begin{", "\\begin{align*}", "\\end{align*}",
    "\\end{", "\\begin{tabular}", "\\end{tabular}", "[asy]", "[/asy]", "{", "}", ".", ". ",
    "\n", "\n\n", " ", ",", ":", " and ", " to ", "=", "+", "\\equiv", "\\cancelto", ".$",
    ".\\]", ",$", "Mr. ", "A. B", "x", "The answer", "<|PLACEHOLDER_", "_PLACEHOLDER|>",
    "\t", "\r\n", "é", "\u2028", "\x00",
]  # fmt: skip


def _random_unicode(rng: random.Random, n: int) -> str:
    ranges = ((1, 0x7F), (0x80, 0xD7FF), (0xE000, 0x10FFFF))  # ASCII, BMP, the rest
    return "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(n))


def test_random_inputs_give_valid_partitions():
    rng = random.Random(1234)
    for _ in range(400):
        text = "".join(rng.choice(_ATOMS) for _ in range(rng.randint(0, 80)))
        _assert_partition(text, split_math_steps(text))
    for _ in range(100):
        text = _random_unicode(rng, rng.randint(0, 300))
        _assert_partition(text, split_math_steps(text))


def test_mutated_real_solutions_give_valid_partitions(math_rows):
    rng = random.Random(99)
    rows = math_rows["test"]
    for _ in range(300):
        text = rng.choice(rows)["solution"]
        kind = rng.random()
        if kind < 0.3:  # truncated, like a cut-off generation
            text = text[: rng.randint(0, len(text))]
        elif kind < 0.6:  # a random slice
            a = rng.randint(0, len(text))
            text = text[a : rng.randint(a, len(text))]
        else:  # random insertions of delimiters
            chars = list(text)
            for _ in range(rng.randint(1, 6)):
                chars.insert(rng.randint(0, len(chars)), rng.choice(_ATOMS))
            text = "".join(chars)
        _assert_partition(text, split_math_steps(text))


@pytest.mark.parametrize(
    "text",
    [
        "$",
        "$$",
        "$x",
        "x$ y$ z$",
        "\\$x$ \\$",
        "\\begin{",
        "\\begin{align}",
        "\\begin{align}x = 1\n\\end{alig",
        "\\[ x \\] \\]",
        "[asy]",
        "[asy][/asy]",
        ".",
        ". . . .",
        "\n\n\n",
        "   ",
        "A. B. C. D.",
        "<|PLACEHOLDER_0123456789abcdef0123456789abcdef_PLACEHOLDER|> is in the input text.",
        "$a$$b$ and $$c$ $d$$",
        "\\(\\[\\(\\]\\)\\]",
    ],
)
def test_hostile_small_inputs(text):
    _assert_partition(text, split_math_steps(text))


@pytest.mark.parametrize(
    "name, text",
    [
        ("unclosed begins", "\\begin{" * 30_000),
        (
            "distinct unclosed environments",
            "".join(f"\\begin{{e{i}}} x " for i in range(14_000)) + "\\end{z}",
        ),
        ("overlapping names", "\\begin{" * 28_000 + "}\\end{"),
        ("unbalanced dollars", "$ x " * 50_000),
        ("newlines in display math", "$$" + "\n" * 200_000 + "$$"),
        ("commas", "a, " * 67_000),
        ("long formula", "$" + "x+" * 100_000 + "$"),
        ("random unicode", None),
    ],
)
def test_200kb_inputs_finish_quickly(name, text):
    if text is None:
        text = _random_unicode(random.Random(7), 200_000)
    assert len(text) >= 190_000
    start = time.perf_counter()
    offsets = split_math_steps(text)
    elapsed = time.perf_counter() - start
    _assert_partition(text, offsets)
    assert elapsed < 10.0, f"{name}: {elapsed:.1f}s"


# --------------------------------------------------------------------------------------------
# (d) golden offsets from the official splitter
# --------------------------------------------------------------------------------------------

# Offsets returned by the paper's `split_solution_inplace` (McGill-NLP/VinePPO @ f636a54a,
# src/treetune/tasks/math_extract_steps_inplace.py) on these rows' gold solutions.
GOLDEN = {
    # [asy] and a formula ending in ".$"
    "test/precalculus/807.json": [0, 40, 93, 174, 199, 225, 250, 288, 306, 334, 351, 358, 439],
    # long parts bisected
    "test/number_theory/572.json": [0, 40, 133, 243, 302, 400, 464, 506],
    # align* and newlines inside display math
    "test/precalculus/990.json": [0, 79, 138, 222, 312, 407, 431, 450, 463],
    # display-math newlines and ".$"
    "test/intermediate_algebra/1000.json": [0, 65, 102, 141, 224, 249, 327, 403],
    # a part still over 100 chars after bisection
    "test/precalculus/34.json": [0, 115, 354, 418, 458],
    # [asy] and bisection
    "test/geometry/967.json": [0, 59, 195, 213, 241, 248, 266, 269, 315, 382, 391],
    # a 4,077-char solution
    "train/algebra/24632.json": [
        0, 76, 151, 190, 208, 224, 242, 266, 293, 318, 346, 366, 397, 420, 449, 536, 617, 632,
        641, 661, 704, 745, 755, 788, 819, 822, 846, 872, 901, 943, 962, 982, 985, 988, 1030,
        1049, 1069, 1072, 1075, 1090, 1145, 1203, 1257, 1312, 1315, 1331, 1401, 1478, 1548, 1625,
        1635, 1724, 1813, 1816, 1819, 1849, 1884, 1919, 1949, 1956, 2061, 2079, 2095, 2113, 2137,
        2164, 2189, 2217, 2237, 2268, 2291, 2320, 2407, 2488, 2503, 2512, 2532, 2575, 2616, 2626,
        2659, 2690, 2693, 2717, 2743, 2772, 2814, 2833, 2853, 2856, 2859, 2901, 2920, 2940, 2943,
        2946, 2961, 3016, 3074, 3128, 3183, 3186, 3202, 3272, 3349, 3419, 3496, 3506, 3595, 3684,
        3687, 3690, 3720, 3755, 3790, 3820, 3864, 3871, 3929, 4016, 4044, 4077,
    ],
}  # fmt: skip


def test_golden_offsets_match_official_splitter(math_rows):
    by_id = {row["unique_id"]: row for split in math_rows.values() for row in split}
    for unique_id, expected in GOLDEN.items():
        assert unique_id in by_id, f"row {unique_id} missing from the MATH data"
        assert split_math_steps(by_id[unique_id]["solution"]) == expected, unique_id
