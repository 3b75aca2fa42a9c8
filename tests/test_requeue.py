"""Stop on request with a checkpoint: the time limit's stop request reaches training
(launch/slurm.sbatch: its stop lead or USR1 -> STOP_REQUESTED), every rank finishes the iteration, a
checkpoint is written, training exits, and `--resume` continues from that checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


class _TwoRanks:
    """A stand-in Accelerator of 2 processes whose other rank has (or has not) a request."""

    def __init__(self, other: bool):
        self.num_processes, self.is_main_process, self.device, self.other = 2, True, "cpu", other

    def gather(self, t):
        return torch.cat([t, torch.tensor([1.0 if self.other else 0.0])])


def test_a_request_on_any_rank_stops_every_rank(tmp_path):
    from vineppo.loop import STOP_FILE, STOP_SIGNAL, STOPPED_FILE, StopRequest

    (tmp_path / STOP_FILE).write_text("")  # left over from the job before the requeue
    (tmp_path / STOPPED_FILE).write_text("3\n")
    req = StopRequest(tmp_path, _TwoRanks(other=False))
    try:
        assert not (tmp_path / STOP_FILE).exists() and not (tmp_path / STOPPED_FILE).exists()
        assert req.agreed() is False
        assert StopRequest.agreed(SimpleNamespace(acc=_TwoRanks(other=True), signalled=False,
                                                  path=tmp_path / STOP_FILE)) is True  # the other rank's
        os.kill(os.getpid(), STOP_SIGNAL)  # this rank's own signal
        assert req.signalled and req.agreed() is True
    finally:
        req.close()
    assert signal.getsignal(STOP_SIGNAL) is not req._on_signal  # the previous handler is back
    req = StopRequest(tmp_path, _TwoRanks(other=False))
    try:
        (tmp_path / STOP_FILE).write_text("")  # the sbatch's request file (shared by every node)
        assert req.agreed() is True
    finally:
        req.close()


def _rows(run: Path) -> list[int]:
    p = run / "metrics.jsonl"
    return [json.loads(l)["iteration"] for l in p.read_text().splitlines() if l.strip()] if p.exists() else []


@pytest.mark.slow
def test_signal_checkpoints_at_the_iteration_end_and_resume_continues(tiny_model_dir, shared_data_dir, tmp_path):
    from vineppo.loop import STOP_SIGNAL, STOPPED_FILE

    run = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}\n")
    args = ["--config", str(cfg), "--output-dir", str(run), "algorithm=grpo", f"model.name_or_path={tiny_model_dir}",
            "model.dtype=float32", "model.gradient_checkpointing=false", "data.task=gsm8k",
            f"data.source={shared_data_dir}", "data.validation_size=0", "sampling.max_new_tokens=16",
            "sampling.max_sequence_length=256", "episodes.questions_per_iteration=2", "episodes.samples_per_question=4",
            "ppo.minibatch_size=8", "ppo.micro_batch_size=4", "engine.backend=hf", "logging.progress=false",
            "save_every=1000", "seed=3"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vineppo", "train", *args, "iterations=200"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not _rows(run) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _rows(run), "no iteration finished"
        proc.send_signal(STOP_SIGNAL)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    rows = _rows(run)
    n = rows[-1]
    assert rows == list(range(1, n + 1)) and n < 200  # stopped long before the end
    assert (run / STOPPED_FILE).read_text().strip() == str(n)
    # save_every=1000: the only checkpoint is the one the request wrote, complete with trainer state
    from vineppo import checkpoint as ckpt

    assert [p.name for p in ckpt.list_checkpoints(run)] == [ckpt.checkpoint_name(n)]
    assert ckpt.latest_checkpoint(run, need_trainer_state=True)[1] == n
    assert "stopped on request" in err
    res = subprocess.run([sys.executable, "-m", "vineppo", "train", *args, "--resume", f"iterations={n + 1}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"(iteration {n})" in res.stderr  # "resuming from .../iter_N (iteration N)"
    assert _rows(run) == list(range(1, n + 2))
    assert not (run / STOPPED_FILE).exists()  # the resumed run finished: nothing to requeue
    assert [p.name for p in ckpt.list_checkpoints(run)] == [ckpt.checkpoint_name(n), ckpt.checkpoint_name(n + 1)]


def _slurm_job(tmp_path, stubs: dict[str, str], env: dict[str, str]):
    """launch/slurm.sbatch with stand-ins for srun, accelerate ("training": waits for the stop
    request, then checkpoints, leaves STOPPED and exits 0), scontrol and python, plus `stubs`."""
    import shutil

    from vineppo.loop import STOP_FILE, STOPPED_FILE

    bin_dir, run = tmp_path / "bin", tmp_path / "run"
    bin_dir.mkdir()
    stubs = {
        "srun": 'eval "${@: -1}"\n',  # run the per-node command here
        "scontrol": f'if [ "$1" = show ]; then echo node0; else echo "$@" >> {tmp_path}/scontrol.log; fi\n',
        "accelerate": (f'touch {tmp_path}/started\nwhile [ ! -f {run}/{STOP_FILE} ]; do sleep 0.1; done\n'
                       f'echo 7 > {run}/{STOPPED_FILE}\n'),
        "python": f'echo "$@" >> {tmp_path}/python.log\n',
        **stubs,
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RUN_DIR": str(run), "SLURM_JOB_ID": "42",
           "SLURM_JOB_NODELIST": "node0", "SLURM_NODEID": "0", "HOME": str(tmp_path), **env}
    return subprocess.Popen([shutil.which("bash"), str(REPO / "launch" / "slurm.sbatch")], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _python_calls(tmp_path) -> list[str]:
    log = tmp_path / "python.log"
    return log.read_text().splitlines() if log.exists() else []


def test_slurm_script_asks_training_to_stop_then_requeues(tmp_path):
    """On USR1 the script writes the request file, waits for training to checkpoint and stop, then
    requeues (and skips evaluation)."""
    proc = _slurm_job(tmp_path, {}, {"STOP_LEAD": "900"})  # no squeue here: no time limit known
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the script is in `wait`
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "42"]
    assert _python_calls(tmp_path) == []  # STOP_LEAD given: no plan; no evaluation before the run is complete
    assert "checkpointed at iteration 7" in out


def test_slurm_script_stops_the_plans_lead_before_the_time_limit(tmp_path):
    """Without STOP_LEAD the lead is the plan's `stop_lead_s` for the config (here 3 s), and the
    script asks for the stop that long before squeue's end time, without any signal from Slurm."""
    end = time.time() + 8
    end_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(end))
    plan_json = '{\n "fits": true,\n "stop_lead_s": 3,\n "notes": []\n}'
    stubs = {
        "squeue": f'echo {end_text}\n',
        "python": (f'echo "$@" >> {tmp_path}/python.log\n'
                   f'if [ "$3" = plan ]; then printf \'%s\\n\' \'{plan_json}\'; exit 3; fi\n'),
    }
    t0 = time.monotonic()
    proc = _slurm_job(tmp_path, stubs, {"CONFIG": "configs/paper/deepseekmath7b_math_vineppo.yaml"})
    out, err = proc.communicate(timeout=60)
    waited = time.monotonic() - t0
    assert proc.returncode == 0, out + err
    assert "asked to stop 3 s before the time limit" in out and "time limit near" in out
    assert 2.0 <= waited <= 7.0, waited  # stopped ~4-5 s in (end - 3 s): not at once, not at the end
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "42"]
    calls = _python_calls(tmp_path)
    assert len(calls) == 1 and calls[0].startswith("-m vineppo plan --config configs/paper/deepseekmath7b_math_vineppo")
    assert "--json" in calls[0]


def test_slurm_script_without_a_plan_waits_an_hour_and_warns_when_the_limit_is_nearer(tmp_path):
    end_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 600))
    proc = _slurm_job(tmp_path, {"squeue": f"echo {end_text}\n"}, {})  # python prints no plan
    time.sleep(3)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "shorter than STOP_LEAD=3600 s" in out
