"""The carried wheels: what the tier without vLLM needs beyond torch, transformers, accelerate and
peft, installed from a local folder with no network (`pip install --no-index --find-links`).

`benchmarks/gpu_wheels.sh` fills the folder (default `benchmarks/.gpu_wheels/`, ignored by git) on
a machine with network: DeepSpeed built as a wheel without compiled ops and the wheels of its
dependencies, plus the graders' packages (math-verify, latex2sympy2_extended, pylatexenc). The
arithmetic task the checks train on needs no grader package and vineppo imports `datasets` only
for the hub: neither is needed here.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ROOT / "benchmarks" / ".gpu_wheels"
#: module -> the requirement that provides it (pinned to the version gpu_wheels.sh builds)
NEEDED = {"deepspeed": "deepspeed==0.19.8"}
#: carried too, installed when missing (the MATH graders, for tests and evaluation on the machine)
EXTRA = {"math_verify": "math-verify", "pylatexenc": "pylatexenc"}
#: what every check imports (a module missing here fails before any GPU time is spent)
IMPORTS = ("torch", "transformers", "accelerate", "peft", "yaml", "safetensors", "tokenizers", "numpy", "deepspeed",
           "vineppo.loop", "vineppo.trainer", "vineppo.distributed", "vineppo.plan", "vineppo.engine.hf",
           "vineppo.lora_sync", "vineppo.tasks.arithmetic", "vineppo.tiny", "benchmarks.gpucheck.children",
           "benchmarks.gpucheck.perf")


def missing(modules) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def install_missing(wheel_dir: Path = WHEELS, python: str | None = None) -> tuple[bool, str]:
    """Install from `wheel_dir` alone (no index, no network) what `NEEDED` and `EXTRA` name and
    this Python lacks. Returns (ok, one-line detail); not ok when something needed is missing and
    cannot be installed from the folder."""
    need = [NEEDED[m] for m in missing(NEEDED)]
    if not need:
        return True, "nothing needed is missing"
    wheels = sorted(p.name for p in wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    if not wheels:
        return False, (f"{', '.join(need)} not installed and no wheels in {wheel_dir}: run benchmarks/gpu_wheels.sh "
                       f"on a machine with network and carry that folder")
    extra = [EXTRA[m] for m in missing(EXTRA)]
    cmd = [python or sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheel_dir),
           "--disable-pip-version-check", "--quiet", *need, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = proc.stderr + proc.stdout
    if proc.returncode != 0 and "externally-managed-environment" in out:  # a distribution's Python (PEP 668)
        proc = subprocess.run(cmd + ["--break-system-packages"], capture_output=True, text=True)
        out = proc.stderr + proc.stdout
    if proc.returncode != 0 and ("Permission denied" in out or "Errno 13" in out):  # not ours to write: the user's site
        proc = subprocess.run(cmd + ["--user"], capture_output=True, text=True)
        out = proc.stderr + proc.stdout
        import site

        site.addsitedir(site.getusersitepackages())
    if proc.returncode != 0:
        err = [line for line in out.splitlines() if line.strip()]
        return False, f"pip install --no-index from {wheel_dir} failed: {err[-1] if err else proc.returncode}"
    importlib.invalidate_caches()
    still = missing(NEEDED)
    if still:
        return False, f"installed from {wheel_dir}, still missing {still}"
    return True, f"installed {' '.join(need + extra)} from {wheel_dir} in {time.perf_counter() - t0:.0f}s"


def import_all(modules=IMPORTS) -> tuple[bool, str]:
    """Import every module the checks use; (ok, the versions or the first failure)."""
    import importlib

    versions = []
    for m in modules:
        try:
            mod = importlib.import_module(m)
        except Exception as e:  # noqa: BLE001 - any import failure is reported in one line
            return False, f"import {m}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if "." not in m and m in ("torch", "transformers", "accelerate", "peft", "deepspeed"):
            versions.append(f"{m} {getattr(mod, '__version__', '?')}")
    return True, ", ".join(versions)
