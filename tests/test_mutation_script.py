"""`make mutation`'s script (tests/mutation.py): its scope names real functions, and it scores a
module's results as docs/testing-mutation.md says (detected, equivalent with a matching line, the
rest a gap that fails the run; a stale equivalent entry fails it too)."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

import mutation

pytest.importorskip("mutmut")


def test_every_function_in_scope_exists_and_every_module_is_mutated():
    # a renamed function would leave its mutants silently unscored; a module missing from
    # pyproject's only_mutate would have none at all
    from mutmut.mutation.file_mutation import compute_function_hashes

    if "mutmut" in (mutation.ROOT / "vineppo" / "advantages.py").read_text():
        pytest.skip("inside mutmut's copy the sources are its trampolines, not the functions they name")
    patterns = mutation.mutmut_config()["only_mutate"]
    for module, functions in mutation.SCOPE.items():
        assert any(fnmatch.fnmatch(module, p) for p in patterns), module
        known = set(compute_function_hashes((mutation.ROOT / module).read_text()))
        for f in functions or ():
            cls, _, name = f.rpartition(".")
            assert (f"xǁ{cls}ǁ{name}" if cls else f"x_{name}") in known, f"{module}: {f}"


def test_globs_name_functions_and_methods():
    assert mutation.mutant_globs("vineppo/advantages.py") == ["vineppo.advantages.*"]
    globs = mutation.mutant_globs("vineppo/trainer.py")
    assert "vineppo.trainer.x_collate__mutmut_*" in globs
    assert "vineppo.trainer.xǁTrainerǁstep__mutmut_*" in globs
    assert len(globs) == len(mutation.SCOPE["vineppo/trainer.py"])


def test_a_package_selects_its_modules_in_scope_order():
    plan = [m for m in mutation.SCOPE if m.startswith("vineppo/plan/")]
    assert len(plan) == 3
    assert mutation.select_modules(["vineppo/plan/"]) == plan
    assert mutation.select_modules(["vineppo/plan", "vineppo/plan/memory.py"]) == plan
    assert mutation.select_modules([]) == list(mutation.SCOPE)
    with pytest.raises(SystemExit, match="vineppo/nope.py is not in tests/mutation.py SCOPE"):
        mutation.select_modules(["vineppo/nope.py"])


def _fake_repo(tmp_path: Path, monkeypatch, codes: dict[str, int | None], equivalent: dict) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.mutmut]\nonly_mutate = ["vineppo/m.py"]\n')
    meta = tmp_path / "mutants" / "vineppo" / "m.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    monkeypatch.setattr(mutation, "ROOT", tmp_path)
    monkeypatch.setattr(mutation, "SCOPE", {"vineppo/m.py": ("f",)})
    monkeypatch.setattr(mutation, "EQUIVALENT", equivalent)
    # each mutant's diff adds the line "<name>"
    monkeypatch.setattr(mutation, "diff", lambda name, module: f"-old\n+    {name.rsplit('.', 1)[1]}")
    monkeypatch.chdir(tmp_path)  # main() changes directory to ROOT; restored afterwards


CODES = {"vineppo.m.x_f__mutmut_1": 1, "vineppo.m.x_f__mutmut_2": 36, "vineppo.m.x_f__mutmut_3": 0,
         "vineppo.m.x_f__mutmut_4": 0, "vineppo.m.x_g__mutmut_1": 0}


def test_scores_detected_equivalent_and_gaps(tmp_path, monkeypatch, capsys):
    equivalent = {"vineppo.m.x_f__mutmut_3": ("x_f__mutmut_3", "cannot change behaviour")}
    _fake_repo(tmp_path, monkeypatch, CODES, equivalent)
    assert mutation.main(["--no-run"]) == 1  # mutant 4 survived and is not listed
    out = capsys.readouterr().out
    # x_g is out of scope; killed and timeout are detected; 3 is equivalent; 4 is the gap
    assert "| vineppo/m.py | 4 | 0 | 2 | 1 | 1 | 50.0 % | 66.7 % |" in out
    assert "# vineppo.m.x_f__mutmut_4: survived" in out and "x_f__mutmut_3: survived" not in out
    assert "x_g__mutmut_1" not in out

    equivalent["vineppo.m.x_f__mutmut_4"] = ("x_f__mutmut_4", "also equivalent")
    assert mutation.main(["--no-run"]) == 0
    assert "| vineppo/m.py | 4 | 0 | 2 | 2 | 0 | 50.0 % | 100.0 % |" in capsys.readouterr().out


def test_a_stale_equivalent_entry_fails_the_run(tmp_path, monkeypatch, capsys):
    # the function was edited: mutant 3 now changes another line than the one listed
    equivalent = {"vineppo.m.x_f__mutmut_3": ("the line it used to change", "cannot change behaviour"),
                  "vineppo.m.x_f__mutmut_4": ("x_f__mutmut_4", "equivalent")}
    _fake_repo(tmp_path, monkeypatch, CODES, equivalent)
    assert mutation.main(["--no-run"]) == 1
    out = capsys.readouterr().out
    assert "no longer match their mutant" in out and "vineppo.m.x_f__mutmut_3" in out
    assert "| vineppo/m.py | 4 | 0 | 2 | 1 | 1 |" in out


def test_a_mutant_not_run_is_counted_apart_and_fails_the_run(tmp_path, monkeypatch, capsys):
    _fake_repo(tmp_path, monkeypatch, {"vineppo.m.x_f__mutmut_1": None, "vineppo.m.x_f__mutmut_2": 1}, {})
    assert mutation.main(["--no-run"]) == 1
    out = capsys.readouterr().out
    assert "x_f__mutmut_1" not in out and "1 mutants not run yet" in out  # no diff: it was never run
    assert "| vineppo/m.py | 2 | 1 | 1 | 0 | 0 | 100.0 % | 100.0 % |" in out


def test_the_docs_list_every_equivalent_mutant_with_its_reason():
    # docs/testing-mutation.md carries `python tests/mutation.py --equivalent-table` verbatim
    doc = (mutation.ROOT / "docs" / "testing-mutation.md").read_text()
    table = mutation.equivalent_table()
    assert table in doc, "regenerate the table: python tests/mutation.py --equivalent-table"
    assert table.count("\n| `") == len(mutation.EQUIVALENT) >= 1


def test_a_run_links_the_shared_data_and_shares_one_tiny_model(tmp_path, monkeypatch):
    """The tests run in ./mutants and find ../shared/data through ./shared: a run from a fresh
    clone (no link yet, `python tests/mutation.py` as much as `make mutation`) makes the link."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    _fake_repo(repo, monkeypatch, {}, {})
    monkeypatch.setattr(mutation, "mutated_functions", lambda: set())
    monkeypatch.delenv("VINEPPO_TEST_TINY_MODEL_CACHE", raising=False)
    calls = []
    monkeypatch.setattr(mutation.subprocess, "run",
                        lambda cmd, cwd, env: calls.append((cmd, cwd, env)) or type("P", (), {"returncode": 0}))
    mutation.run_modules(["vineppo/m.py"], children=2)
    assert (repo / "shared").resolve() == (tmp_path / "shared").resolve()
    (cmd, cwd, env), = calls
    assert cmd[1:] == ["run", "--max-children", "2", "vineppo.m.x_f__mutmut_*"] and cwd == repo
    assert env["VINEPPO_TEST_TINY_MODEL_CACHE"] == str(repo / "mutants" / ".tiny-model")
