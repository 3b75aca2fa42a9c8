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
    data = {"iteration": iteration, "files": files, **(extra or {})}
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


def latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint; broken ones are skipped with a warning, never loaded."""
    for p in reversed(list_checkpoints(run_dir)):
        ok, why = verify_checkpoint(p)
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
