"""What a multi-process run checks before it starts, and what it asks of the ranks that do not write.

- Uneven question shards are refused on every rank before any collective (`validate_world`), so
  FSDP2 / ZeRO-3 exit with one clear line instead of aborting in gloo or hanging in NCCL.
- Every rank must see the run directory rank 0 prepared (`check_shared_run_dir`: a token file
  with a nonce broadcast from rank 0), else one error naming the path.
- Checkpoint weights are gathered by every rank together but kept only on the writer
  (`AccelerateStrategy.writer_state_dict`), in the training dtype.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port

REPO = Path(__file__).resolve().parents[1]


def _accelerate(strategy: str, *args: str, timeout: int = 300) -> tuple[subprocess.CompletedProcess, float]:
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    cmd = [accelerate, "launch", "--config_file", str(REPO / "launch" / "cpu" / f"{strategy}.yaml"),
           "--main_process_port", str(free_port()), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def _deepspeed_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "zero3"])
def test_uneven_shards_exit_cleanly_at_start(strategy, tmp_path):
    """3 questions on 2 processes (shards of 2 and 1 questions): both ranks refuse at start with the
    line naming the setting and the process count; no rank aborts (SIGABRT) or loses its peer
    in a collective, and the run directory is not prepared."""
    if strategy.startswith("zero") and not _deepspeed_available():
        pytest.skip("DeepSpeed is not installed (pip install -e '.[deepspeed]', see README Install)")
    out = tmp_path / "run"
    proc, seconds = _accelerate(
        strategy, "-m", "vineppo", "train", "--config", str(REPO / "configs" / "tiny" / "gsm8k_ppo.yaml"),
        "--output-dir", str(out), f"model.name_or_path={tmp_path / 'never-built'}",
        "episodes.questions_per_iteration=3", "ppo.minibatch_size=4", "ppo.micro_batch_size=2")
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    lines = [l for l in text.splitlines() if "episodes.questions_per_iteration (3) is not divisible" in l]
    assert lines and all("2 processes" in l and l.startswith("vineppo: config error:") for l in lines), text[-3000:]
    for crash in ("SIGABRT", "Signal 6", "Connection reset", "timed out"):
        assert crash not in text, (crash, text[-3000:])
    # every rank ended by the CLI's config-error exit (2), none in a traceback of its own (the
    # launcher's report of the failed children is accelerate's)
    codes = set(re.findall(r"exitcode\s*:\s*(-?\d+)", text))
    assert "2" in codes and codes <= {"2", "-15"}, text[-3000:]  # -15: the launcher's SIGTERM to a peer
    assert not any(l.strip().startswith("File ") and "/vineppo/" in l for l in text.splitlines()), text[-3000:]
    # refused before the run directory is prepared (only the console's log files are there)
    assert not (out / "config.yaml").exists() and not (tmp_path / "never-built").exists()


# ---- the run directory every rank must see ------------------------------------------------------
def test_token_read_back_says_what_a_rank_saw(tmp_path):
    from vineppo.shared_dir import TOKEN_FILE, read_token, write_token

    nonce = write_token(tmp_path)
    assert (tmp_path / TOKEN_FILE).read_text() == nonce and len(nonce) == 32
    assert read_token(tmp_path, nonce, wait_s=0) is None
    assert write_token(tmp_path) != nonce  # a fresh nonce each run: a stale file cannot pass
    assert read_token(tmp_path, nonce, wait_s=0) == "holds another run's token"
    assert read_token(tmp_path / "elsewhere", nonce, wait_s=0) == "its directory does not exist"
    (tmp_path / "empty").mkdir()
    assert read_token(tmp_path / "empty", nonce, wait_s=0) == "does not exist"
    t0 = time.perf_counter()
    assert read_token(tmp_path / "empty", nonce, wait_s=0.3, poll_s=0.1) == "does not exist"
    assert 0.3 <= time.perf_counter() - t0 < 2  # retried until the deadline (a slow network filesystem)


def test_not_shared_message_names_the_path_the_hosts_and_the_remedy(tmp_path):
    from vineppo.shared_dir import describe_failures

    ok = [(0, "node-a", None), (1, "node-a", None)]
    assert describe_failures(tmp_path, ok) is None
    bad = ok + [(2, "node-b", "its directory does not exist"), (3, "node-b", "holds another run's token")]
    msg = describe_failures(tmp_path, bad)
    assert str(tmp_path.resolve()) in msg and "2 of 4 ranks" in msg
    assert "rank 2 on node-b: its directory does not exist" in msg and "3 on node-b: holds another" in msg
    assert msg.endswith("hosts without it: node-b") and "shared" in msg and "\n" not in msg


def test_single_process_needs_no_check(tmp_path):
    from types import SimpleNamespace

    from vineppo.shared_dir import check_shared_run_dir

    check_shared_run_dir(SimpleNamespace(num_processes=1), tmp_path / "not-even-created")


@pytest.mark.slow
def test_two_ranks_check_the_run_dir_and_only_the_writer_gathers(tiny_model_dir, tmp_path):
    """Under FSDP2 (2 gloo processes, bf16 mixed precision as on GPUs): the shared-directory check
    passes on a directory both see and fails on both ranks with per-rank directories; a bf16
    checkpoint loads in bf16 and becomes fp32 masters equal to it; the checkpoint's gathered
    weights exist on rank 0 only, and are written in bf16."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bf16_dir = tmp_path / "tiny-bf16"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    model.save_pretrained(bf16_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(bf16_dir)
    out = tmp_path / "out"
    out.mkdir()
    proc, _ = _accelerate("fsdp", str(REPO / "tests" / "scripts" / "two_rank_start.py"), str(bf16_dir), str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    for r in (r0, r1):
        assert r["mixed_precision"] == "bf16" and r["shared_ok"] and not r["token_left"]
        assert r["master_dtypes"] == ["torch.float32"] and r["sharded"] and r["masters_equal_checkpoint"]
    # both ranks raise the same error, naming rank 0's directory and rank 1 (rank 0 sees its own)
    assert r0["not_shared_error"] == r1["not_shared_error"]
    assert f"{(out / 'node_local_0').resolve()} is not shared" in r0["not_shared_error"]
    assert "1 of 2 ranks" in r0["not_shared_error"]
    assert "rank 1 on" in r0["not_shared_error"]
    assert r1["writer_dict"] is None
    w = r0["writer_dict"]
    assert w["keys"] > 0 and w["dtypes"] == ["torch.bfloat16"] and w["equal_checkpoint"]
    assert r0["saved_dtypes"] == ["torch.bfloat16"]

