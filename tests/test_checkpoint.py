"""Checkpoint verification: half-written or corrupted checkpoints are never loaded."""

import logging

from vineppo.checkpoint import latest_checkpoint, verify_checkpoint, write_manifest


def _fake(root, it, complete=True):
    d = root / "checkpoints" / f"iter_{it:06d}"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"x" * 1000)
    if complete:
        write_manifest(d, it)
    return d


def test_latest_complete_checkpoint_wins(tmp_path):
    _fake(tmp_path, 1)
    _fake(tmp_path, 2)
    path, it = latest_checkpoint(tmp_path)
    assert it == 2 and path.name == "iter_000002"


def test_half_written_and_truncated_are_skipped(tmp_path, caplog):
    _fake(tmp_path, 1)
    d2 = _fake(tmp_path, 2)
    _fake(tmp_path, 3, complete=False)  # no manifest: crash before the end
    (tmp_path / "checkpoints" / ".tmp_iter_000004").mkdir()  # an unfinished temp dir
    (d2 / "model.safetensors").write_bytes(b"x" * 10)  # truncated file
    with caplog.at_level(logging.WARNING):
        path, it = latest_checkpoint(tmp_path)
    assert it == 1
    assert "iter_000003" in caplog.text and "iter_000002" in caplog.text
    ok, why = verify_checkpoint(d2)
    assert not ok and "model.safetensors" in why


def test_no_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
