"""Running a table of checks, each in a process of its own, under one overall deadline (pure: no
torch, no GPU; tested on CPU in tests/test_gpu_check.py).

A check is a command line. Its process (and everything it starts: `accelerate launch` and the
trainer under it) writes all its output to `logs/<name>.log` and its verdict to
`results/<name>.json` (`write_result`). Up to `jobs` checks run at once; an `exclusive` check
runs alone (its timings and vLLM's memory profiling must not share the GPU). When the deadline
comes, the running checks are stopped (their whole process group) and every check not finished
is reported as not run; what finished is kept.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

PASS, FAIL, SKIP, NOT_RUN = "pass", "fail", "skip", "not run"
TAGS = {PASS: "PASS", FAIL: "FAIL", SKIP: "SKIP", NOT_RUN: "NOT RUN"}
#: exit status: every check passed or was skipped / one failed / none failed but some did not run
EXIT_OK, EXIT_FAILED, EXIT_NOT_RUN = 0, 1, 2


@dataclass(frozen=True)
class Check:
    name: str
    argv: tuple[str, ...]
    #: runs alone: nothing else starts while it runs, it starts when nothing else runs
    exclusive: bool = False
    #: its own limit in seconds (a hang fails), within the overall deadline
    timeout: float = 300.0
    env: tuple[tuple[str, str], ...] = ()
    #: checks that must have passed before this one starts (else it is reported not run)
    after: tuple[str, ...] = ()


@dataclass
class Result:
    name: str
    status: str
    detail: str
    seconds: float = 0.0
    log: str | None = None
    measures: dict = field(default_factory=dict)


def write_result(path: Path, status: str, detail: str, measures: dict | None = None) -> None:
    """What a check's process reports (atomically: a half-written file is never read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"status": status, "detail": detail, "measures": measures or {}}, default=float))
    os.replace(tmp, path)


def format_result(r: Result) -> str:
    if r.status == NOT_RUN:
        return f"NOT RUN {r.name}: {r.detail}"
    return f"{TAGS[r.status]} {r.name} ({r.seconds:.0f}s): {r.detail}"


def summary(results: Sequence[Result]) -> str:
    passed = sum(r.status == PASS for r in results)
    failed = sum(r.status == FAIL for r in results)
    not_run = sum(r.status == NOT_RUN for r in results)
    line = f"gpu_check: {passed} passed, {failed} failed"
    return line + (f", {not_run} not run" if not_run else "")


def exit_status(results: Sequence[Result]) -> int:
    if any(r.status == FAIL for r in results):
        return EXIT_FAILED
    if any(r.status == NOT_RUN for r in results):
        return EXIT_NOT_RUN
    return EXIT_OK


#: an exception's last line: `ValueError: ...`, `torch.OutOfMemoryError: ...`
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b[^ ]*:")
#: the launchers' own exceptions, raised because the trainer failed: not the cause
_LAUNCHER = ("ChildFailedError", "CalledProcessError")


def log_tail(path: Path) -> str:
    """The line of a log that says why it failed: the last exception line that is not a launcher's
    (`accelerate launch` / torchrun re-raise a failed trainer), else the last non-empty line."""
    try:
        text = [t.strip() for t in path.read_text(errors="replace").splitlines() if t.strip()]
    except OSError:
        return "no log"
    causes = [t for t in text if _EXCEPTION.match(t) and not any(w in t for w in _LAUNCHER)]
    if causes:
        return causes[-1][:400]
    return text[-1][:400] if text else "no output"


class _Running:
    def __init__(self, check: Check, proc: subprocess.Popen, log_file, started: float, log: Path):
        self.check, self.proc, self.log_file, self.started, self.log = check, proc, log_file, started, log


def _stop(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop a check's whole process group: SIGTERM, then SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_checks(checks: Sequence[Check], workdir: Path, deadline: float, *, jobs: int = 1,
               clock: Callable[[], float] = time.monotonic, report: Callable[[Result], None] | None = None,
               poll: float = 0.2, cwd: Path | None = None) -> list[Result]:
    """Run `checks` (in their order, up to `jobs` at once) until each is done or `deadline`
    (a `clock()` time) passes. A check waits for those it comes `after`; an exclusive one waits
    until nothing runs, and nothing behind it starts before it. Returns one Result per check, in
    the table's order; `report` is called with each as it is decided (the one line per check)."""
    names = {c.name for c in checks}
    unknown = sorted({a for c in checks for a in c.after} - names)
    if unknown:
        raise ValueError(f"checks wait for {unknown}, which are not in the table")
    logs, results_dir = workdir / "logs", workdir / "results"
    logs.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    pending = list(checks)
    running: list[_Running] = []
    done: dict[str, Result] = {}

    def decide(r: Result) -> None:
        done[r.name] = r
        if report is not None:
            report(r)

    def finish(run: _Running, timed_out: bool = False) -> None:
        run.log_file.close()
        seconds = clock() - run.started
        res_path = results_dir / f"{run.check.name}.json"
        rc = run.proc.returncode
        if timed_out:
            decide(Result(run.check.name, FAIL, f"timed out after {seconds:.0f}s (its limit "
                          f"{run.check.timeout:.0f}s); last line: {log_tail(run.log)}", seconds, str(run.log)))
            return
        if res_path.is_file():
            data = json.loads(res_path.read_text())
            status = data.get("status", FAIL)
            detail = data.get("detail", "")
            if rc != 0 and status == PASS:  # a verdict written, then the process died
                status, detail = FAIL, f"exit {rc} after reporting: {detail}"
            decide(Result(run.check.name, status, detail, seconds, str(run.log), data.get("measures", {})))
            return
        decide(Result(run.check.name, FAIL, f"exit {rc}, no verdict written: {log_tail(run.log)}", seconds,
                      str(run.log)))

    try:
        while pending or running:
            for run in list(running):
                if run.proc.poll() is not None:
                    running.remove(run)
                    finish(run)
            now = clock()
            if now >= deadline:
                for run in running:
                    _stop(run.proc)
                    run.log_file.close()
                    seconds = clock() - run.started
                    decide(Result(run.check.name, NOT_RUN, f"stopped at the deadline after {seconds:.0f}s", seconds,
                                  str(run.log)))
                for c in pending:
                    decide(Result(c.name, NOT_RUN, "the deadline came before it started"))
                break
            for run in list(running):
                if now - run.started > run.check.timeout:
                    _stop(run.proc)
                    running.remove(run)
                    finish(run, timed_out=True)
            i = 0
            while i < len(pending) and len(running) < max(1, jobs):
                nxt = pending[i]
                waiting = [a for a in nxt.after if a not in done]
                failed = [a for a in nxt.after if a in done and done[a].status != PASS]
                if failed:
                    pending.pop(i)
                    decide(Result(nxt.name, NOT_RUN, f"needs {', '.join(failed)}, which did not pass"))
                    continue
                if waiting:
                    i += 1
                    continue
                if any(r.check.exclusive for r in running) or (nxt.exclusive and running):
                    break  # the GPU is (to be) someone's alone: nothing behind starts either
                pending.pop(i)
                log = logs / f"{nxt.name}.log"
                (results_dir / f"{nxt.name}.json").unlink(missing_ok=True)
                log_file = open(log, "w")
                env = {**os.environ, **dict(nxt.env)}
                proc = subprocess.Popen(list(nxt.argv), stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                        cwd=cwd, start_new_session=True)  # its own group: stopped as a whole
                running.append(_Running(nxt, proc, log_file, clock(), log))
                if nxt.exclusive:
                    break
            if running:
                time.sleep(poll)
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): no check outlives the run in its own session
        for run in running:
            _stop(run.proc, grace=1.0)
            run.log_file.close()
        raise
    return [done[c.name] for c in checks]


def results_json(results: Sequence[Result], **info) -> dict:
    """gpu_check.json: the run's facts (`info`), every check's result and measures, the summary."""
    return {**info, "checks": [asdict(r) for r in results],
            "measures": {r.name: r.measures for r in results if r.measures}, "summary": summary(results)}
