"""`grading.mode` (official | math_verify): config, training task, MATH task in both modes."""

from __future__ import annotations

import pytest

from vineppo.config import ConfigError, load_config
from vineppo.loop import training_task
from vineppo.tasks import GRADING_MODES, get_task

ROW = {"problem": "Compute 1/2 as a fraction.", "solution": "It is $\\boxed{\\frac{1}{2}}$."}


def test_config_default_is_official_and_overrides_reach_the_training_task():
    cfg = load_config(None, ["model.name_or_path=m", "data.task=math"])
    assert cfg.grading.mode == "official"
    assert training_task(cfg).grading_mode == "official"
    cfg = load_config(None, ["model.name_or_path=m", "data.task=gsm8k", "grading.mode=math_verify"])
    assert training_task(cfg).grading_mode == "math_verify"
    with pytest.raises(ConfigError, match="grading"):
        load_config(None, ["model.name_or_path=m", "grading.mode=lenient"])
    assert GRADING_MODES == ("official", "math_verify")


def test_the_mode_reaches_a_wrapped_task_custom_fields_and_boxed_answers():
    """Custom fields and answer formats wrap/adjust the task; the grader keeps the configured mode."""
    cfg = load_config(None, ["model.name_or_path=m", "data.task=gsm8k", "grading.mode=math_verify",
                             "data.question_field=q", "data.answer_field=a", "data.answer_format=boxed"])
    task = training_task(cfg)
    assert task.inner.grading_mode == "math_verify" and task.inner.answer_format == "boxed"
    row = {"q": "How many?", "a": "1,200"}
    assert task.is_correct("So it is \\boxed{1200}.", row)
    assert not task.is_correct("So it is \\boxed{1201}.", row)
    assert not task.is_correct("So it is\n#### 1200", row)  # boxed format: `####` is not read


@pytest.mark.parametrize(
    "response, official, math_verify",
    [
        ("So $\\boxed{\\frac{1}{2}}$.", True, True),
        ("So $\\boxed{0.5}$.", True, True),
        # the official grader reads `\frac12` but not a wrong value; math-verify agrees
        ("So $\\boxed{\\frac12}$.", True, True),
        ("So $\\boxed{\\frac{1}{3}}$.", False, False),
        # no braces: the official extractor finds nothing; math-verify reads the value
        ("So $\\boxed 0.5$.", False, True),
        # the official grader deletes \cdot ("1\cdot0.5" reads 10.5); math-verify multiplies
        ("So $\\boxed{1 \\cdot 0.5}$.", False, True),
    ],
)
def test_math_task_in_both_modes(response, official, math_verify):
    assert get_task("math").is_correct(response, ROW) is official
    assert get_task("math", grading_mode="math_verify").is_correct(response, ROW) is math_verify
