"""Atomic checkpoints: `DIR/checkpoints/iter_NNNNNN/` = HF model + tokenizer (loadable with
`from_pretrained`) + `trainer_state/` (optimizer, scheduler, RNG, critic: accelerate's format) +
`MANIFEST.json` (iteration, every file's size) written last. The directory is assembled under a
temporary name and renamed into place, so a crash never leaves a half-written `iter_*`; a
checkpoint whose manifest is missing or whose files do not match it is skipped on resume."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
MANIFEST = "MANIFEST.json"


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:06d}"


def write_manifest(path: Path, iteration: int, extra: dict | None = None) -> None:
    files = {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*"))
             if p.is_file() and p.name not in (MANIFEST, MANIFEST + ".tmp")}
    write_manifest_data(path, {"iteration": iteration, "files": files, **(extra or {})})


def write_manifest_data(path: Path, data: dict) -> None:
    tmp = path / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path / MANIFEST)


def verify_checkpoint(path: Path) -> tuple[bool, str]:
    """(ok, reason). OK iff the manifest exists and every listed file exists with its size."""
    mf = path / MANIFEST
    if not mf.is_file():
        return False, "no MANIFEST.json (half-written?)"
    try:
        data = json.loads(mf.read_text())
        files = data["files"]
        int(data["iteration"])
    except Exception as e:  # noqa: BLE001 - any unreadable manifest means: do not load
        return False, f"unreadable manifest ({e})"
    for rel, size in files.items():
        p = path / rel
        if not p.is_file():
            return False, f"missing file {rel}"
        if p.stat().st_size != size:
            return False, f"{rel} has {p.stat().st_size} bytes, manifest says {size}"
    if not (path / "config.json").is_file():
        return False, "no config.json"
    return True, ""


def list_checkpoints(run_dir: Path) -> list[Path]:
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if p.is_dir() and p.name.startswith("iter_")), key=lambda p: p.name)


def latest_checkpoint(run_dir: Path, need_trainer_state: bool = False) -> tuple[Path, int] | None:
    """The newest complete checkpoint; broken ones are skipped with a warning, never loaded.
    `need_trainer_state`: only checkpoints that still hold `trainer_state/` (resume)."""
    for p in reversed(list_checkpoints(run_dir)):
        ok, why = verify_checkpoint(p)
        if ok and need_trainer_state and not has_trainer_state(p):
            ok, why = False, "its trainer state was pruned (checkpoint.keep_trainer_state)"
        if ok:
            return p, int(json.loads((p / MANIFEST).read_text())["iteration"])
        log.warning("skipping checkpoint %s: %s", p, why)
    return None


def finalize(tmp: Path, final: Path) -> None:
    """Rename the assembled temporary directory into place (replacing an older copy)."""
    if final.exists():
        trash = final.with_name(final.name + ".old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def has_trainer_state(path: Path) -> bool:
    return (Path(path) / "trainer_state").is_dir() and json.loads((Path(path) / MANIFEST).read_text()).get(
        "trainer_state", True) is not False


def prune_trainer_states(run_dir: Path, keep: int) -> list[Path]:
    """Drop `trainer_state/` (optimizer, schedulers, RNG) from all complete checkpoints but the
    newest `keep` that have one; HF weights stay. The manifest is rewritten first (atomically,
    `"trainer_state": false`), so a crash midway leaves a valid weights-only checkpoint."""
    with_state = [p for p in list_checkpoints(run_dir) if verify_checkpoint(p)[0] and has_trainer_state(p)]
    pruned = []
    for p in with_state[: max(0, len(with_state) - keep)]:
        data = json.loads((p / MANIFEST).read_text())
        files = {k: v for k, v in data.pop("files").items() if not k.startswith("trainer_state/")}
        write_manifest_data(p, {**data, "files": files, "trainer_state": False})
        shutil.rmtree(p / "trainer_state", ignore_errors=True)
        pruned.append(p)
        log.info("checkpoint.keep_trainer_state: dropped the trainer state of %s", p.name)
    return pruned
