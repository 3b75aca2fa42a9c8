"""`GraderPool`: worker processes running the symbolic check under a hard per-case timeout."""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from vineppo.tasks.math_grading.compare import _answer_lists_match, _decide_without_symbolic, _math_equal
from vineppo.tasks.math_grading.extraction import extract_math_answer
from vineppo.tasks.math_grading.symbolic import _WORKER_LAUNCH, DEFAULT_WORKER_MEMORY_MB

#: seconds allowed for the symbolic part of one case (the official SympySimplifier timeout)
DEFAULT_TIMEOUT = 15.0
#: grader worker processes in the default pool
DEFAULT_NUM_WORKERS = 2

# --------------------------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------------------------

# How long a fresh worker may take to import sympy and report ready.
_WORKER_START_TIMEOUT = 120.0
# Consecutive workers dying before ready after which the pool gives up (a broken install).
_MAX_FAILED_STARTS = 3


@dataclass
class _Job:
    index: int
    op: str
    args: tuple
    deadline: float = 0.0


class _Worker:
    """One grader subprocess and its protocol state."""

    def __init__(self, memory_limit_mb: int, stderr_to_devnull: bool) -> None:
        self.memory_limit_mb = memory_limit_mb
        self.stderr_to_devnull = stderr_to_devnull
        self.process: subprocess.Popen | None = None
        self.buffer = b""
        self.ready = False
        self.job: _Job | None = None
        self.start_deadline = 0.0

    def start(self) -> None:
        package_root = str(Path(__file__).resolve().parents[3])
        env = dict(os.environ)
        env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_LAUNCH, str(self.memory_limit_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if self.stderr_to_devnull else None,
            env=env,
            close_fds=True,
            start_new_session=True,  # Ctrl-C goes to the grading process, which closes the pool
        )
        assert self.process.stdout is not None
        os.set_blocking(self.process.stdout.fileno(), False)
        self.buffer = b""
        self.ready = False
        self.job = None
        self.start_deadline = time.monotonic() + _WORKER_START_TIMEOUT

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is None:
            return
        try:
            self.process.kill()
        except OSError:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            pass
        self.process = None
        self.ready = False
        self.job = None

    def send(self, job: _Job) -> bool:
        """Hand `job` to this (ready, idle) worker; False if the worker turned out to be dead."""
        assert self.process is not None and self.process.stdin is not None
        line = json.dumps({"id": job.index, "op": job.op, "args": list(job.args)}).encode() + b"\n"
        try:
            self.process.stdin.write(line)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        self.job = job
        return True

    def read_messages(self) -> tuple[list[dict], bool]:
        """Complete messages now available, and whether the worker's output has ended."""
        assert self.process is not None and self.process.stdout is not None
        ended = False
        while True:
            try:
                chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                ended = True
                break
            if not chunk:
                ended = True
                break
            self.buffer += chunk
        messages = []
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue
        return messages, ended


class GraderPool:
    """Sandboxed MATH grading in worker processes, each case under a hard timeout.

    Cases that string or numeric rules decide are answered in the calling process; only the rest
    (those needing the symbolic check) go to the workers, `num_workers` at a time. A worker that
    exceeds the timeout is killed and replaced, a worker that crashes is replaced; either way that
    case is graded "not equal" and the pool keeps serving. Use as a context manager, or call
    `close()`; `default_grader_pool()` gives a shared pool that is closed at interpreter exit.
    """

    def __init__(
        self,
        num_workers: int = DEFAULT_NUM_WORKERS,
        timeout: float = DEFAULT_TIMEOUT,
        memory_limit_mb: int = DEFAULT_WORKER_MEMORY_MB,
        quiet_workers: bool = True,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.num_workers = num_workers
        self.timeout = float(timeout)
        self.memory_limit_mb = memory_limit_mb
        self.quiet_workers = quiet_workers
        self._workers: list[_Worker] = []
        self._owner_pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False
        #: cases answered by a worker / killed at the timeout / lost to a worker crash
        self.stats = {"worker_cases": 0, "timeouts": 0, "crashes": 0}

    # -- public API --------------------------------------------------------------------------

    def math_equal(self, pred: str, gold: str, timeout: float | None = None) -> bool:
        """`math_equal` for one pair of normalised answers."""
        decided = _decide_without_symbolic(lambda symbolic: _math_equal(pred, gold, symbolic))
        if decided is not None:
            return decided
        return self._run([_Job(0, "math_equal", (pred, gold))], timeout)[0]

    def answer_lists_match(self, preds: Sequence[str], golds: Sequence[str], timeout: float | None = None) -> bool:
        """`eval_math` for one pair of extracted answer lists."""
        return self.grade_answer_lists([(preds, golds)], timeout)[0]

    def grade_answer_lists(
        self, cases: Iterable[tuple[Sequence[str], Sequence[str]]], timeout: float | None = None
    ) -> list[bool]:
        """`eval_math` for many (predicted answers, gold answers) pairs, in parallel."""
        verdicts: list[bool] = []
        jobs: list[_Job] = []
        for index, (preds, golds) in enumerate(cases):
            preds, golds = [str(p) for p in preds], [str(g) for g in golds]
            decided = _decide_without_symbolic(
                lambda symbolic, p=preds, g=golds: _answer_lists_match(p, g, symbolic)
            )
            verdicts.append(bool(decided))
            if decided is None:
                jobs.append(_Job(index, "answer_lists_match", (preds, golds)))
        if jobs:
            for job, verdict in zip(jobs, self._run(jobs, timeout)):
                verdicts[job.index] = verdict
        return verdicts

    def math_verify_many(self, cases: Iterable[tuple[str, str]], timeout: float | None = None) -> list[bool]:
        """`math_verify` mode: for each (gold text, predicted text) pair, whether math-verify
        finds the same answer in both. Every pair runs in a worker under the timeout."""
        jobs = [_Job(index, "math_verify", (str(gold), str(pred))) for index, (gold, pred) in enumerate(cases)]
        return self._run(jobs, timeout) if jobs else []

    def grade_many(
        self, cases: Iterable[tuple[str, str, str | None]], timeout: float | None = None
    ) -> list[bool]:
        """Grade (response, gold solution, question) triples; see `is_correct_math`."""
        pairs = [
            (extract_math_answer(response, question), extract_math_answer(gold_solution, question))
            for response, gold_solution, question in cases
        ]
        return self.grade_answer_lists(pairs, timeout)

    def start(self) -> None:
        """Start the workers now and wait until they are ready (otherwise they start on first
        use). Also replaces workers still restarting after a timeout or a crash."""
        self._run([], None, until_all_ready=True)

    def close(self) -> None:
        """Stop every worker. The pool cannot be used afterwards."""
        with self._lock:
            self._closed = True
            if os.getpid() == self._owner_pid:
                for worker in self._workers:
                    worker.kill()
            self._workers = []

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- scheduling --------------------------------------------------------------------------

    def _ensure_workers(self) -> None:
        if os.getpid() != self._owner_pid:
            # A forked copy of the pool: the workers belong to the parent; start our own.
            self._workers = []
            self._owner_pid = os.getpid()
        while len(self._workers) < self.num_workers:
            self._workers.append(_Worker(self.memory_limit_mb, self.quiet_workers))
        for worker in self._workers:
            if not worker.alive:
                worker.kill()
                worker.start()

    def _run(self, jobs: list[_Job], timeout: float | None, until_all_ready: bool = False) -> list[bool]:
        """Run `jobs` on the workers; verdict False for any job that times out or crashes.

        DEPARTURE: the timeout covers a whole job (all symbolic checks of one case); the official
        code timed each `simplify` separately and left `N` untimed.
        """
        limit = self.timeout if timeout is None else float(timeout)
        if limit <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        with self._lock:
            if self._closed:
                raise RuntimeError("GraderPool is closed")
            self._ensure_workers()
            try:
                return self._schedule(jobs, limit, until_all_ready)
            except BaseException:
                # Interrupted or failed mid-batch: drop every worker so no stale job survives.
                for worker in self._workers:
                    worker.kill()
                raise

    def _schedule(self, jobs: list[_Job], limit: float, until_all_ready: bool = False) -> list[bool]:
        results: dict[int, bool] = {}
        pending = deque(range(len(jobs)))
        failed_starts = 0
        while (
            pending
            or any(w.job is not None for w in self._workers)
            or (until_all_ready and not all(w.ready for w in self._workers))
        ):
            now = time.monotonic()
            for worker in self._workers:
                if worker.ready and worker.job is None and pending and not worker.alive:
                    worker.kill()  # died while idle: replace it before it loses a case
                    worker.start()
                if worker.ready and worker.job is None and pending:
                    position = pending.popleft()
                    job = jobs[position]
                    if worker.send(_Job(position, job.op, job.args, deadline=now + limit)):
                        continue
                    pending.appendleft(position)  # never started: it goes to the next worker
                    worker.kill()
                    worker.start()

            busy = [w for w in self._workers if w.job is not None]
            starting = [w for w in self._workers if not w.ready]
            deadlines = [w.job.deadline for w in busy] + [w.start_deadline for w in starting]
            wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 0.0
            with selectors.DefaultSelector() as selector:
                for worker in busy + starting:
                    assert worker.process is not None and worker.process.stdout is not None
                    selector.register(worker.process.stdout, selectors.EVENT_READ, worker)
                events = selector.select(timeout=wait)

            for key, _ in events:
                worker = key.data
                messages, ended = worker.read_messages()
                for message in messages:
                    if message.get("ready"):
                        worker.ready = True
                        failed_starts = 0
                    elif "fatal" in message:
                        raise RuntimeError(f"MATH grader worker could not start: {message['fatal']}")
                    elif worker.job is not None and message.get("id") == worker.job.index:
                        results[worker.job.index] = bool(message.get("result"))
                        self.stats["worker_cases"] += 1
                        worker.job = None
                if ended:
                    if worker.job is not None:
                        results[worker.job.index] = False
                        self.stats["crashes"] += 1
                    elif not worker.ready:
                        failed_starts += 1
                        if failed_starts >= _MAX_FAILED_STARTS:
                            raise RuntimeError(
                                "MATH grader workers exit before they are ready; run "
                                f"`{sys.executable} -c \"{_WORKER_LAUNCH}\" 2048` to see why"
                            )
                    worker.kill()
                    worker.start()

            now = time.monotonic()
            for worker in self._workers:
                if worker.job is not None and now >= worker.job.deadline:
                    results[worker.job.index] = False
                    self.stats["timeouts"] += 1
                    worker.kill()
                    worker.start()
                elif not worker.ready and now >= worker.start_deadline:
                    raise RuntimeError(f"a MATH grader worker did not start within {_WORKER_START_TIMEOUT:.0f} s")
        return [results.get(position, False) for position in range(len(jobs))]


_default_pool: GraderPool | None = None
_default_pool_lock = threading.Lock()


def default_grader_pool() -> GraderPool:
    """The shared pool (2 workers, 15 s), created on first use and closed at interpreter exit."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = GraderPool()
        return _default_pool


def shutdown_default_grader_pool() -> None:
    """Stop the shared pool's workers (a later use starts a new pool)."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is not None:
            _default_pool.close()
            _default_pool = None


atexit.register(shutdown_default_grader_pool)


# --------------------------------------------------------------------------------------------
# Module-level entry points
# --------------------------------------------------------------------------------------------


def math_equal(pred: str, gold: str, timeout: float = DEFAULT_TIMEOUT, pool: GraderPool | None = None) -> bool:
    """Whether two normalised answers are equal under the official `math_equal` rules.

    String and numeric checks run here; the symbolic check runs in `pool` (default: the shared
    pool) under `timeout` seconds, and a timeout or worker crash counts as not equal.
    """
    return (pool or default_grader_pool()).math_equal(pred, gold, timeout)


def answer_lists_match(
    preds: Sequence[str], golds: Sequence[str], timeout: float = DEFAULT_TIMEOUT, pool: GraderPool | None = None
) -> bool:
    """The official `eval_math`: the predicted answer list (last `len(golds)` distinct ones)
    and the gold answer list match element-wise as sets."""
    return (pool or default_grader_pool()).answer_lists_match(preds, golds, timeout)


def is_correct_math(
    response: str,
    gold_solution: str,
    question: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    pool: GraderPool | None = None,
) -> bool:
    """Whether `response` reaches the answer of `gold_solution` (both extracted the same way).

    `question` matters for questions asking for values "separated by commas".
    """
    if not isinstance(response, str) or not isinstance(gold_solution, str):
        return False
    return (pool or default_grader_pool()).grade_many([(response, gold_solution, question)], timeout)[0]

