"""The stop / resume decisions of the training loop, without training: when a stop request stops
the run and when a checkpoint is written (`stop_after`, `checkpoint_due`), which metrics rows a
resume keeps and continues from (`MetricsWriter.truncate_after`, `last_row`), and what a
`StopRequest` clears, listens to and restores."""

from __future__ import annotations

import json
import signal
import threading
from types import SimpleNamespace

import pytest

from vineppo.config import TrainConfig
from vineppo.loop import (STOP_FILE, STOP_SIGNAL, STOPPED_FILE, MetricsWriter, StopRequest, checkpoint_due,
                          stop_after)


class _Request:
    """A stop request that every rank agrees on (or not); counts the collective calls."""

    def __init__(self, requested: bool):
        self.requested, self.calls = requested, 0

    def agreed(self) -> bool:
        self.calls += 1
        return self.requested


def test_a_request_stops_after_any_iteration_but_the_last():
    assert stop_after(1, 3, _Request(True)) is True
    assert stop_after(2, 3, _Request(True)) is True
    # after the last iteration the run ends anyway: no stop (no STOPPED file, no requeue)
    assert stop_after(3, 3, _Request(True)) is False
    assert stop_after(2, 3, _Request(False)) is False


def test_checkpoints_every_save_every_at_the_end_and_before_a_stop():
    due = [d for d in range(1, 11) if checkpoint_due(d, 3, 10, stopping=False)]
    assert due == [3, 6, 9, 10]
    assert checkpoint_due(4, 3, 10, stopping=True) is True
    assert checkpoint_due(4, 3, 10, stopping=False) is False
    assert checkpoint_due(1, 1, 10, stopping=False) is True


def _writer(tmp_path, enabled: bool = True) -> MetricsWriter:
    return MetricsWriter(tmp_path, TrainConfig(), enabled)


def _lines(rows: list[dict], tail: str = "") -> str:
    return "".join(json.dumps(r) + "\n" for r in rows) + tail


def test_resume_drops_the_rows_after_the_checkpoint_and_a_half_written_line(tmp_path):
    rows = [{"iteration": i, "seconds": float(i)} for i in range(1, 5)]
    (tmp_path / "metrics.jsonl").write_text(_lines(rows, '{"iteration": 5, "sec'))
    _writer(tmp_path).truncate_after(2)
    assert (tmp_path / "metrics.jsonl").read_text() == _lines(rows[:2])
    _writer(tmp_path).truncate_after(0)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_only_the_writing_process_truncates(tmp_path):
    text = _lines([{"iteration": 1}, {"iteration": 2}])
    (tmp_path / "metrics.jsonl").write_text(text)
    _writer(tmp_path, enabled=False).truncate_after(1)
    assert (tmp_path / "metrics.jsonl").read_text() == text
    _writer(tmp_path / "absent").truncate_after(1)  # no file yet: nothing to do, no error
    assert not (tmp_path / "absent" / "metrics.jsonl").exists()


def test_last_row_is_the_last_complete_one(tmp_path):
    w = _writer(tmp_path)
    assert w.last_row() == {}  # no file
    (tmp_path / "metrics.jsonl").write_text(_lines([{"iteration": 1, "a": 1}, {"iteration": 2, "a": 2}], '{"itera'))
    assert w.last_row() == {"iteration": 2, "a": 2}
    assert _writer(tmp_path, enabled=False).last_row() == {}
    (tmp_path / "metrics.jsonl").write_text('{"itera\n')
    assert w.last_row() == {}


def _acc(main: bool = True):
    return SimpleNamespace(is_main_process=main, num_processes=1, device="cpu")


def test_a_fresh_run_starts_without_request_files(tmp_path):
    req = StopRequest(tmp_path, _acc())  # nothing to clear: no error
    try:
        assert req.agreed() is False
    finally:
        req.close()


def test_only_the_main_process_clears_the_request_files(tmp_path):
    (tmp_path / STOP_FILE).write_text("")
    (tmp_path / STOPPED_FILE).write_text("3\n")
    req = StopRequest(tmp_path, _acc(main=False))
    try:
        assert (tmp_path / STOP_FILE).exists() and (tmp_path / STOPPED_FILE).exists()
        assert req.agreed() is True
    finally:
        req.close()


def test_close_restores_the_previous_handler_once():
    def previous(signum, frame):
        pass

    before = signal.signal(STOP_SIGNAL, previous)
    try:
        req = StopRequest(".", SimpleNamespace(is_main_process=False, num_processes=1, device="cpu"))
        assert signal.getsignal(STOP_SIGNAL) == req._on_signal
        req.close()
        assert signal.getsignal(STOP_SIGNAL) is previous
        signal.signal(STOP_SIGNAL, signal.SIG_DFL)
        req.close()  # a second close leaves the handler alone
        assert signal.getsignal(STOP_SIGNAL) == signal.SIG_DFL
    finally:
        signal.signal(STOP_SIGNAL, before)


def test_outside_the_main_thread_only_the_file_requests(tmp_path):
    before = signal.getsignal(STOP_SIGNAL)
    out = {}

    def make():
        out["req"] = StopRequest(tmp_path, _acc())

    t = threading.Thread(target=make)
    t.start()
    t.join()
    req = out["req"]
    assert req._previous is None and signal.getsignal(STOP_SIGNAL) == before
    assert req.agreed() is False
    (tmp_path / STOP_FILE).write_text("")
    assert req.agreed() is True
    req.close()
    assert signal.getsignal(STOP_SIGNAL) == before


def test_a_signal_is_a_request(tmp_path):
    req = StopRequest(tmp_path, _acc())
    try:
        assert req.signalled is False
        req._on_signal(int(STOP_SIGNAL), None)
        assert req.signalled is True and req.agreed() is True
    finally:
        req.close()


@pytest.mark.parametrize("other", [False, True])
def test_two_ranks_agree_through_the_maximum(tmp_path, other):
    import torch

    gathered = []

    def gather(t):
        gathered.append(t.clone())
        return torch.cat([t, torch.tensor([1.0 if other else 0.0])])

    acc = SimpleNamespace(is_main_process=True, num_processes=2, device="cpu", gather=gather)
    req = StopRequest(tmp_path, acc)
    try:
        assert req.agreed() is other
        assert gathered[-1].tolist() == [0.0]  # this rank: no request
        req.signalled = True
        assert req.agreed() is True
        assert gathered[-1].tolist() == [1.0]
    finally:
        req.close()


def test_with_several_processes_the_request_is_agreed_through_a_gather_on_the_device(tmp_path):
    # NCCL gathers only tensors on the process's own GPU: the flag is made on `acc.device`
    import torch

    sent = []

    def gather(t):
        sent.append(t)
        return torch.cat([torch.zeros(1), torch.tensor(others)])

    acc = SimpleNamespace(is_main_process=True, num_processes=2, device=torch.device("meta"), gather=gather)
    req = StopRequest(tmp_path, acc)
    try:
        others = [0.0]
        assert req.agreed() is False and sent[-1].device == torch.device("meta")
        others = [1.0]  # another rank has a request: every rank agrees to stop
        assert req.agreed() is True
    finally:
        req.close()


def test_truncation_keeps_rows_without_an_iteration_and_reads_past_a_broken_line(tmp_path):
    # a row without "iteration" (written before the first one) counts as iteration 0: kept even when
    # resuming from iteration 0; a broken line that is not the last (two crashes in a row) is
    # dropped and the rows after it are still read
    (tmp_path / "metrics.jsonl").write_text(_lines([{"run": "start"}]) + '{"iteration": 1, "sec\n'
                                            + _lines([{"iteration": 1}, {"iteration": 3}]))
    _writer(tmp_path).truncate_after(1)
    assert (tmp_path / "metrics.jsonl").read_text() == _lines([{"run": "start"}, {"iteration": 1}])
    _writer(tmp_path).truncate_after(0)
    assert (tmp_path / "metrics.jsonl").read_text() == _lines([{"run": "start"}])


def test_a_checkpoint_save_clears_what_a_crashed_save_left(tmp_path):
    from vineppo import checkpoint as ckpt
    from vineppo.loop import save_checkpoint

    class Trainer:
        cfg = SimpleNamespace(checkpoint=SimpleNamespace(keep_trainer_state=None))

        def save_state(self, path):
            path.mkdir(parents=True)
            (path / "optimizer.bin").write_text("o")

        def save_pretrained(self, path):
            (path / "config.json").write_text("{}")
            (path / "model.safetensors").write_text("w")

    stale = tmp_path / "checkpoints" / ".tmp_iter_000003"
    stale.mkdir(parents=True)
    (stale / "half_written.bin").write_text("x")  # a save that crashed midway
    acc = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
    final = save_checkpoint(Trainer(), acc, tmp_path, 3)
    assert final == tmp_path / "checkpoints" / "iter_000003" and not stale.exists()
    assert not (final / "half_written.bin").exists() and ckpt.verify_checkpoint(final) == (True, "")
    assert (final / "trainer_state" / "optimizer.bin").is_file()
    # checkpoint.keep_trainer_state 1: the next save drops the older trainer state
    trainer = Trainer()
    trainer.cfg = SimpleNamespace(checkpoint=SimpleNamespace(keep_trainer_state=1))
    newer = save_checkpoint(trainer, acc, tmp_path, 4)
    assert ckpt.has_trainer_state(newer) and not ckpt.has_trainer_state(final)
