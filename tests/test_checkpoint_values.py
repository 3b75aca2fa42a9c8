"""Checkpoint files exactly (vineppo/checkpoint.py): the manifest's content, every reason a
checkpoint is refused, which checkpoint resume picks, the atomic replacement of an older copy,
and which trainer states `checkpoint.keep_trainer_state` drops."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from vineppo import checkpoint as ckpt


def _ckpt(root, it, *, state=True, manifest=True, name=None):
    d = root / "checkpoints" / (name or ckpt.checkpoint_name(it))
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"x" * 100)
    if state:
        (d / "trainer_state").mkdir()
        (d / "trainer_state" / "optimizer.bin").write_bytes(b"o" * 30)
    if manifest:
        ckpt.write_manifest(d, it)
    return d


def test_checkpoint_names_are_zero_padded():
    assert ckpt.checkpoint_name(7) == "iter_000007"
    assert ckpt.checkpoint_name(123456) == "iter_123456"


def test_manifest_lists_every_file_with_its_size(tmp_path):
    d = _ckpt(tmp_path, 3, manifest=False)
    (d / ckpt.MANIFEST).write_text("old")  # neither the manifest nor its temporary file list themselves
    (d / (ckpt.MANIFEST + ".tmp")).write_text("half")
    ckpt.write_manifest(d, 3, extra={"note": "x"})
    data = json.loads((d / ckpt.MANIFEST).read_text())
    assert data == {"iteration": 3, "note": "x",
                    "files": {"config.json": 2, "model.safetensors": 100, "trainer_state/optimizer.bin": 30}}
    ckpt.write_manifest(d, 4)
    assert "note" not in json.loads((d / ckpt.MANIFEST).read_text())


def test_manifest_is_replaced_whole(tmp_path):
    ckpt.write_manifest_data(tmp_path, {"iteration": 1, "files": {}})
    assert json.loads((tmp_path / ckpt.MANIFEST).read_text()) == {"iteration": 1, "files": {}}
    assert not (tmp_path / (ckpt.MANIFEST + ".tmp")).exists()


def test_manifest_text_is_indented_for_reading(tmp_path):
    ckpt.write_manifest_data(tmp_path, {"iteration": 1, "files": {"a": 2}})
    assert (tmp_path / ckpt.MANIFEST).read_text() == '{\n "iteration": 1,\n "files": {\n  "a": 2\n }\n}'


def test_a_crashed_manifest_write_leaves_nothing_the_next_one_lists(tmp_path, monkeypatch):
    d = _ckpt(tmp_path, 3, manifest=False)

    def disk_error(fd):
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(ckpt.os, "fsync", disk_error)
        with pytest.raises(OSError):
            ckpt.write_manifest(d, 3)
    ckpt.write_manifest(d, 3)  # the retry: its leftover temporary file is not one of the checkpoint's files
    assert ckpt.verify_checkpoint(d) == (True, "")
    assert sorted(json.loads((d / ckpt.MANIFEST).read_text())["files"]) == [
        "config.json", "model.safetensors", "trainer_state/optimizer.bin"]


def test_every_reason_a_checkpoint_is_refused(tmp_path):
    d = _ckpt(tmp_path, 1)
    assert ckpt.verify_checkpoint(d) == (True, "")
    (d / "model.safetensors").write_bytes(b"x" * 99)
    assert ckpt.verify_checkpoint(d) == (False, "model.safetensors has 99 bytes, manifest says 100")
    (d / "model.safetensors").unlink()
    assert ckpt.verify_checkpoint(d) == (False, "missing file model.safetensors")
    d = _ckpt(tmp_path, 2, manifest=False)
    assert ckpt.verify_checkpoint(d) == (False, "no MANIFEST.json (half-written?)")
    for bad in ("{not json", '{"iteration": 2}', '{"files": {}}', '{"iteration": "two", "files": {}}'):
        (d / ckpt.MANIFEST).write_text(bad)
        ok, why = ckpt.verify_checkpoint(d)
        assert not ok and why.startswith("unreadable manifest (")
    (d / "config.json").unlink()
    ckpt.write_manifest(d, 2)
    assert ckpt.verify_checkpoint(d) == (False, "no config.json")


def test_list_checkpoints_only_iter_directories_by_name(tmp_path):
    assert ckpt.list_checkpoints(tmp_path) == []
    _ckpt(tmp_path, 10)
    _ckpt(tmp_path, 2)
    (tmp_path / "checkpoints" / "iter_000005").write_text("a file, not a checkpoint")
    (tmp_path / "checkpoints" / ".tmp_iter_000011").mkdir()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["iter_000002", "iter_000010"]


def test_resume_picks_the_newest_checkpoint_with_a_trainer_state(tmp_path, caplog):
    _ckpt(tmp_path, 1)
    _ckpt(tmp_path, 2)
    d3 = _ckpt(tmp_path, 3, state=False)
    path, it = ckpt.latest_checkpoint(tmp_path)
    assert (path, it) == (d3, 3)
    with caplog.at_level(logging.WARNING):
        assert ckpt.latest_checkpoint(tmp_path, need_trainer_state=True) == (tmp_path / "checkpoints" / "iter_000002", 2)
    assert "iter_000003: its trainer state was pruned (checkpoint.keep_trainer_state)" in caplog.text
    # the iteration is the manifest's, not the directory name's
    _ckpt(tmp_path, 7, name="iter_000009")
    assert ckpt.latest_checkpoint(tmp_path)[1] == 7


def test_a_pruned_state_is_no_state(tmp_path):
    d = _ckpt(tmp_path, 1)
    assert ckpt.has_trainer_state(d)
    data = json.loads((d / ckpt.MANIFEST).read_text())
    ckpt.write_manifest_data(d, {**data, "trainer_state": False})
    assert not ckpt.has_trainer_state(d)  # the directory is there, the manifest says it is pruned
    ckpt.write_manifest_data(d, {**data, "trainer_state": True})
    assert ckpt.has_trainer_state(d)
    assert not ckpt.has_trainer_state(_ckpt(tmp_path, 2, state=False))


def test_finalize_replaces_an_older_copy(tmp_path):
    final, tmp = tmp_path / "iter_000001", tmp_path / ".tmp_iter_000001"
    tmp.mkdir()
    (tmp / "new").write_text("new")
    ckpt.finalize(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new"] and not tmp.exists()
    tmp.mkdir()
    (tmp / "newer").write_text("newer")
    ckpt.finalize(tmp, final)
    assert [p.name for p in final.iterdir()] == ["newer"] and not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000001"]  # no .old left behind


def test_finalize_clears_the_trash_of_a_crashed_replacement(tmp_path):
    # a crash between the two renames of an earlier save left `iter_000001.old` behind
    final, tmp = tmp_path / "iter_000001", tmp_path / ".tmp_iter_000001"
    final.mkdir()
    (final / "old").write_text("old")
    (tmp_path / "iter_000001.old").mkdir()
    (tmp_path / "iter_000001.old" / "older").write_text("older")
    tmp.mkdir()
    (tmp / "new").write_text("new")
    ckpt.finalize(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000001"]


def test_finalize_survives_a_trash_it_cannot_delete(tmp_path, monkeypatch):
    # deleting the replaced copy is tidying: a failure there (a file held open on a network file
    # system) must not fail the save, whose new copy is already in place
    real_rmtree = ckpt.shutil.rmtree

    def stubborn_rmtree(path, ignore_errors=False, **kw):
        if Path(path).exists():
            if not ignore_errors:
                raise OSError(16, "Device or resource busy", str(path))
            return
        real_rmtree(path, ignore_errors=ignore_errors, **kw)

    monkeypatch.setattr(ckpt.shutil, "rmtree", stubborn_rmtree)
    final, tmp = tmp_path / "iter_000001", tmp_path / ".tmp_iter_000001"
    final.mkdir()
    tmp.mkdir()
    (tmp / "new").write_text("new")
    ckpt.finalize(tmp, final)
    assert [p.name for p in final.iterdir()] == ["new"] and not tmp.exists()


def test_prune_keeps_the_newest_states_and_rewrites_their_manifests(tmp_path):
    c = [_ckpt(tmp_path, it) for it in (1, 2, 3, 4)]
    broken = _ckpt(tmp_path, 5)
    (broken / "config.json").unlink()  # not a complete checkpoint: never touched
    pruned = ckpt.prune_trainer_states(tmp_path, keep=2)
    assert pruned == c[:2]
    for d in c[:2]:
        assert not (d / "trainer_state").exists()
        data = json.loads((d / ckpt.MANIFEST).read_text())
        assert data == {"iteration": int(d.name[-1]), "files": {"config.json": 2, "model.safetensors": 100},
                        "trainer_state": False}
        assert ckpt.verify_checkpoint(d) == (True, "")
    assert all((d / "trainer_state").is_dir() for d in c[2:]) and (broken / "trainer_state").is_dir()
    assert ckpt.prune_trainer_states(tmp_path, keep=2) == []  # the pruned ones no longer count
    assert ckpt.prune_trainer_states(tmp_path, keep=0) == c[2:]


def test_a_trainer_state_that_cannot_be_removed_does_not_stop_the_pruning(tmp_path, monkeypatch):
    # pruning runs inside training: a file it cannot delete (another process holds it, a network
    # file system) leaves litter, not a crashed run. The manifest already says weights-only
    import os

    c = [_ckpt(tmp_path, it) for it in (1, 2, 3)]
    stuck = next((c[0] / "trainer_state").iterdir()).name
    real_unlink, refused = os.unlink, []

    def unlink(path, *args, **kw):  # the first checkpoint's (pruned first) file cannot be deleted
        if os.path.basename(os.fsdecode(path)) == stuck and not refused:
            refused.append(path)
            raise PermissionError(13, "busy", path)
        return real_unlink(path, *args, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    assert ckpt.prune_trainer_states(tmp_path, keep=1) == c[:2]
    assert refused and (c[0] / "trainer_state" / stuck).exists()
    assert not ckpt.has_trainer_state(c[0]) and ckpt.verify_checkpoint(c[0]) == (True, "")
    assert not (c[1] / "trainer_state").exists() and ckpt.has_trainer_state(c[2])
