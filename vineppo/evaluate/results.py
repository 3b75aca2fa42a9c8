"""Evaluation files: `samples.jsonl` and `results.json`, written atomically (results last: its
presence means the evaluation is complete), read back by the sweep and `vineppo compare`."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from vineppo.evaluate.settings import RESULTS_FILE, SAMPLES_FILE

log = logging.getLogger("vineppo.evaluate")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_results(out_dir: str | Path, results: Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> Path:
    """Write `samples.jsonl` then `results.json` into `out_dir` (each atomically). Returns results.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(out / SAMPLES_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    _atomic_write_text(out / RESULTS_FILE, json.dumps(dict(results), indent=1) + "\n")
    return out / RESULTS_FILE


def read_results(path: str | Path) -> dict | None:
    """The results in `path` (a results.json or its directory), or None if absent or unreadable."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        log.warning("ignoring unreadable eval results %s: %s", p, e)
        return None
    if not isinstance(data, dict) or "pass@1" not in data:
        log.warning("ignoring eval results %s: no 'pass@1' field", p)
        return None
    return data


def eval_dir(checkpoint_dir: str | Path, split: str) -> Path:
    """Where the results of `checkpoint_dir` on `split` live by default: `<ckpt>/eval/<split>/`."""
    return Path(checkpoint_dir) / "eval" / split
