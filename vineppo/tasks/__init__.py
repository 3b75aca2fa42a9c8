"""Tasks by name. Each task module is imported only when it is asked for."""

from __future__ import annotations

from typing import Any, Callable

from vineppo.tasks.base import GRADING_MODES, PROMPT_TEMPLATE, STOP_STRINGS, Row, Task

__all__ = ["GRADING_MODES", "PROMPT_TEMPLATE", "STOP_STRINGS", "Row", "Task", "TASK_NAMES", "get_task"]


def _gsm8k() -> type[Task]:
    from vineppo.tasks.gsm8k import GSM8KTask

    return GSM8KTask


def _arithmetic() -> type[Task]:
    from vineppo.tasks.arithmetic import ArithmeticTask

    return ArithmeticTask


def _chain() -> type[Task]:
    from vineppo.tasks.chain import ChainTask

    return ChainTask


def _math() -> type[Task]:
    from vineppo.tasks.math import MathTask

    return MathTask


# name -> function returning the Task class (lazy, so a task's heavy imports load only on use).
_REGISTRY: dict[str, Callable[[], type[Task]]] = {
    "gsm8k": _gsm8k,
    "math": _math,
    "arithmetic": _arithmetic,  # the embedded demo task (synthetic, GSM8K answer format)
    "chain": _chain,  # long arithmetic chains with an exact oracle (configs/demo_chain.yaml)
}

#: the names get_task accepts
TASK_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get_task(name: str, **kwargs: Any) -> Task:
    """A new Task instance for `name` ("gsm8k", "math", "arithmetic", "chain"); `kwargs` go to its constructor
    (every task takes `grading_mode`: "official", the default, or "math_verify")."""
    try:
        task_class = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}; valid names: {', '.join(TASK_NAMES)}") from None
    return task_class()(**kwargs)
