"""What the test environment provides. Under `VINEPPO_TEST_STRICT=1` (set by `.ci/run`, which installs
vLLM's CPU build, peft and has ../shared/data beside the repo) a missing piece fails here by name,
and `conftest.py` turns every other skip into a failure too. Not skipped when vLLM is absent: the
default-backend check lives here, not in the vLLM engine tests' module."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import SHARED_DATA_DIR, STRICT


def _need(ok: bool, what: str) -> None:
    if not ok:
        if STRICT:
            pytest.fail(f"{what} is missing (VINEPPO_TEST_STRICT=1)")
        pytest.skip(f"{what} is not installed")


def test_vllm_is_importable_and_the_default_backend():
    from vineppo.config import EngineConfig
    from vineppo.engine import default_backend, vllm_available
    from vineppo.engine.factory import resolve_backend

    _need(vllm_available(), "vLLM (pip install -e '.[cpu]')")
    assert default_backend() == "vllm"
    assert resolve_backend(EngineConfig()) == "vllm"
    assert resolve_backend(EngineConfig(backend="hf")) == "hf"


def test_peft_is_importable():
    _need(importlib.util.find_spec("peft") is not None, "peft (in the [dev] extra)")
    import peft  # noqa: F401


def test_shared_data_is_present():
    for name in ("gsm8k/train.jsonl", "gsm8k/test.jsonl", "math/train.jsonl", "math/test.jsonl"):
        _need((SHARED_DATA_DIR / name).is_file(), f"../shared/data/{name}")


def test_strict_mode_turns_skips_into_failures(pytester, monkeypatch):
    """The conftest hook itself: a skipping test fails under VINEPPO_TEST_STRICT=1, passes as skipped otherwise."""
    import pathlib

    pytester.makeconftest(pathlib.Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(test_skips="import pytest\ndef test_s():\n    pytest.skip('no thing')\n")
    monkeypatch.setenv("VINEPPO_TEST_STRICT", "1")
    strict = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    strict.assert_outcomes(failed=1)
    monkeypatch.setenv("VINEPPO_TEST_STRICT", "0")
    loose = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    loose.assert_outcomes(skipped=1)


def test_strict_mode_fails_a_collection_time_skip(pytester, monkeypatch):
    """A module-level `pytest.importorskip` skips the whole file at collection: strict mode fails it
    (naming the file and the reason), the loose mode reports it as skipped."""
    import pathlib

    pytester.makeconftest(pathlib.Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(test_module_skip="import pytest\npytest.importorskip('no_such_module_xyz')\n"
                                         "def test_never():\n    pass\n")
    monkeypatch.setenv("VINEPPO_TEST_STRICT", "1")
    strict = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    assert strict.ret != 0
    strict.assert_outcomes(errors=1)
    strict.stdout.fnmatch_lines(["*VINEPPO_TEST_STRICT=1: test_module_skip.py would be skipped at collection*no_such_module_xyz*"])
    monkeypatch.setenv("VINEPPO_TEST_STRICT", "0")
    loose = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert loose.ret == 0 or loose.ret == 5  # all skipped
    loose.assert_outcomes(skipped=1)
