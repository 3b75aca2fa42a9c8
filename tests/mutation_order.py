"""pytest plugin of `make mutation` (pyproject.toml, [tool.mutmut] `pytest_add_cli_args`): a mutant's
tests run fastest first, by the durations mutmut recorded in the fast tier, so that with `-x` its
cheapest failing test kills it. mutmut's fork server (the isolation torch needs: a process that has
run torch's OpenMP threads cannot fork a child that uses them) hands the tests over unordered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    stats = Path(config.rootpath) / "mutmut-stats.json"
    if not stats.is_file():
        return
    durations = json.loads(stats.read_text()).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))
