"""docs/configuration.md is generated from the config dataclasses (tools/config_reference.py):
it must be current, and every key must carry a `#:` comment saying what it does."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.config_reference import (PAGE, demo_sections, eval_sections, field_comments, format_value,  # noqa: E402
                                    generate, missing_meanings, sections, train_sections)


@dataclass
class _Inner:
    #: the inner value
    x: int = 1


@dataclass
class _Outer:
    """An example section."""
    #: first line of a comment
    #: and its second line
    a: float = 1e-6
    # a plain comment is a heading, not documentation
    b: Literal["p", "q"] | None = None
    c: list[str] = field(default_factory=lambda: ["u"])
    #: a nested section
    inner: _Inner = field(default_factory=_Inner)
    #: an optional section
    maybe: _Inner | None = None


def test_field_comments_are_the_hash_colon_block_above_a_field():
    assert field_comments(_Outer) == {"a": "first line of a comment and its second line", "b": "", "c": "",
                                      "inner": "a nested section", "maybe": "an optional section"}


def test_sections_flatten_nested_and_optional_dataclasses():
    secs = sections(_Outer)
    assert [s.prefix for s in secs] == ["", "inner", "maybe"]
    rows = {r.key: r for s in secs for r in s.rows}
    assert list(rows) == ["a", "b", "c", "maybe", "inner.x", "maybe.x"]
    assert (rows["a"].type, rows["a"].default) == ("float", "1e-6")
    assert (rows["b"].type, rows["b"].default) == ('"p" | "q" | null', "null")
    assert rows["c"].default == '["u"]' and rows["maybe"].default == "null"
    assert secs[0].intro == "An example section." and secs[1].intro == "A nested section."
    assert missing_meanings(secs) == ["b", "c"]


def test_defaults_are_written_as_yaml():
    assert [format_value(v) for v in (None, True, 0.9, 1e-4, 2746318213, "a\\b", (0.9, 0.999))] == \
        ["null", "true", "0.9", "0.0001", "2746318213", '"a\\\\b"', "[0.9, 0.999]"]


def test_every_config_key_is_documented():
    for secs in (train_sections(), eval_sections(), demo_sections()):
        assert missing_meanings(secs) == []


def test_every_training_key_is_on_the_page():
    from vineppo.config import TrainConfig

    text = PAGE.read_text()
    rows = [r.key for s in train_sections() for r in s.rows]
    assert len(rows) > 90
    assert all(f"| `{k}` |" in text for k in rows)
    top = {f.name for f in dataclasses.fields(TrainConfig)}
    assert top <= {k.split(".")[0] for k in rows}


def test_the_page_is_current():
    """Fails when a config field, its default or its comment changed without regenerating:
    run `python tools/config_reference.py`."""
    assert PAGE.read_text() == generate(), "docs/configuration.md is stale: run python tools/config_reference.py"
