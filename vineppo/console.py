"""What reaches the terminal: our own progress and results; everything else goes to the run's log.

`setup_console(log_file, verbose)` is called once per process before the heavy imports (from
`vineppo.cli.main` for every command, and by the demo's background RL processes):

- our loggers (`vineppo.*`) print INFO lines to the terminal, as before;
- third-party log records (vLLM, transformers, accelerate, torch, ...), Python warnings
  (`torch.distributed.reduce_op` FutureWarning, ...) and output written by C/C++ code to file
  descriptor 2 (NUMA binding notices, glog lines) go to `log_file` only; records at ERROR and
  above still reach the terminal;
- third-party progress bars (vLLM's safetensors loading, transformers' weight loading) are written
  to the log file: a tqdm bar created outside `vineppo.*` without an explicit `file` gets the log
  (hub and `datasets` bars are switched off by their env variables);
- `verbose=True` (`vineppo -v ...`) shows everything on the terminal as well (and still logs it).

Errors reach the terminal in full: an uncaught exception's traceback is written to the terminal
(and to the log), and our own error lines (`print(..., file=sys.stderr)`) go to the terminal
because `sys.stderr` stays the terminal even when file descriptor 2 is the log.

Libraries offer pieces of this (`VLLM_CONFIGURE_LOGGING`, `transformers.utils.logging`,
`logging.captureWarnings`, `HF_HUB_DISABLE_PROGRESS_BARS`); this module is the one place that combines them.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import traceback
from pathlib import Path

#: loggers whose INFO lines are the program's own console output
OWN_LOGGERS = ("vineppo", "__main__")
#: environment defaults that silence third-party console output (a user's own setting wins)
QUIET_ENV = {
    "VLLM_CONFIGURE_LOGGING": "0",         # vLLM: no stdout handler of its own; records propagate to ours
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",     # its fork warning
}
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_state: dict = {}


def is_own(record: logging.LogRecord) -> bool:
    """True for a record of the program itself (shown on the terminal at INFO)."""
    return any(record.name == n or record.name.startswith(n + ".") for n in OWN_LOGGERS)


class _TerminalFilter(logging.Filter):
    """Our INFO lines and anyone's errors; with `verbose`, everything."""

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        return self.verbose or record.levelno >= logging.ERROR or (is_own(record) and record.levelno >= logging.INFO)


def rank_log_file(path: str | Path) -> Path:
    """`path`, or `path` with `.rankN` before the suffix on ranks > 0 of a launched job."""
    path = Path(path)
    rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or "0"
    if rank not in ("", "0"):
        return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
    return path


def setup_console(log_file: str | Path | None, verbose: bool = False, *, redirect_fd: bool = True) -> Path | None:
    """Route third-party output to `log_file` (appended; None: no file, third-party output is
    dropped from the terminal unless `verbose`) and keep ours on the terminal. Call before
    importing torch / vLLM / transformers so their import-time output is caught too. Idempotent:
    a second call only changes the log file and verbosity. Returns the log file used."""
    for k, v in QUIET_ENV.items():
        if not verbose or k in ("TOKENIZERS_PARALLELISM",):
            os.environ.setdefault(k, v)
    path = rank_log_file(log_file) if log_file is not None else None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in _state.get("handlers", []):
        root.removeHandler(h)
        h.close()
    terminal = _state.get("terminal") or sys.stderr
    handlers: list[logging.Handler] = []
    console = logging.StreamHandler(terminal)
    console.setFormatter(logging.Formatter(FORMAT))
    console.addFilter(_TerminalFilter(verbose))
    handlers.append(console)
    if path is not None:
        fh = logging.FileHandler(path, mode="a", encoding="utf-8")
        fh.setFormatter(logging.Formatter(FORMAT))
        handlers.append(fh)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(logging.INFO)
    _state["handlers"] = handlers
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> the file
    _state["verbose"] = verbose
    _state["file_handler"] = handlers[1] if path is not None else None
    _state["own_handlers"] = set(handlers)
    if "emit" not in _state:
        _state["emit"] = logging.StreamHandler.emit
        logging.StreamHandler.emit = _emit  # type: ignore[method-assign]
    _quiet_transformers()
    _route_tqdm()
    if redirect_fd and path is not None:
        _redirect_fd2(path, verbose)
    if "excepthook" not in _state:
        _state["excepthook"] = sys.excepthook
        sys.excepthook = _excepthook
    if _state.get("path") != path and _state.get("tqdm_file") is not None:
        _state.pop("tqdm_file").close()
    _state["path"] = path
    return path


def _quiet_transformers() -> None:
    """transformers logs through its own stderr handler (no propagation): hand its records to ours."""
    if "transformers" not in sys.modules and "transformers.utils.logging" not in sys.modules:
        try:
            import transformers.utils.logging as hf_logging
        except Exception:  # noqa: BLE001 - not installed: nothing to quiet
            return
    else:
        import transformers.utils.logging as hf_logging
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.disable_progress_bar()


def _redirect_fd2(path: Path, verbose: bool) -> None:
    """C/C++ code writes to file descriptor 2 directly: point it at the log file, and keep Python's
    `sys.stderr` (our error lines, tracebacks, our progress bars) on the saved terminal descriptor.
    With `verbose` the descriptor stays the terminal."""
    if verbose or "saved_fd" in _state:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, io.UnsupportedOperation):  # no real fd 2 (embedded, some test runners)
        return
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    _state["saved_fd"] = saved
    terminal = io.TextIOWrapper(os.fdopen(saved, "wb", buffering=0), encoding="utf-8",
                                errors="backslashreplace", line_buffering=True, write_through=True)
    _state["terminal"] = terminal
    sys.stderr = terminal
    for h in _state.get("handlers", []):
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
            h.setStream(terminal)


def _route_tqdm() -> None:
    """tqdm bars created by third-party code (no `file=` given) write to the log file, or nowhere
    without one; ours (created in `vineppo.*`) keep the terminal. With `verbose` nothing changes."""
    try:
        import tqdm.std
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return
    if "tqdm_init" in _state:
        return
    original = _state["tqdm_init"] = tqdm.std.tqdm.__init__

    def __init__(self, *args, **kwargs):
        if not _state.get("verbose") and kwargs.get("file") is None and len(args) < 5 and not _created_by_us():
            log = _state.get("tqdm_file")
            if log is None:
                path = _state.get("path")
                log = open(path, "a", encoding="utf-8") if path is not None else open(os.devnull, "w")
                _state["tqdm_file"] = log
            kwargs["file"] = log
        original(self, *args, **kwargs)

    tqdm.std.tqdm.__init__ = __init__


def _created_by_us() -> bool:
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("tqdm", __name__)):
        frame = frame.f_back
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return any(name == n or name.startswith(n + ".") for n in OWN_LOGGERS)


def _emit(handler: logging.StreamHandler, record: logging.LogRecord) -> None:
    """`logging.StreamHandler.emit` while the console is set up. Some libraries log through a
    console handler of their own that does not propagate (DeepSpeed to stdout, torch._logging to
    stderr): their records below ERROR go to the log file instead of the terminal."""
    emit = _state["emit"]
    if (handler in _state.get("own_handlers", ()) or _state.get("verbose") or record.levelno >= logging.ERROR
            or isinstance(handler, logging.FileHandler) or not _is_terminal(getattr(handler, "stream", None))):
        return emit(handler, record)
    fh = _state.get("file_handler")
    if fh is not None and record.levelno >= fh.level:
        fh.handle(record)


def _is_terminal(stream) -> bool:
    return stream is not None and (stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__,
                                              _state.get("terminal")))


def _excepthook(kind, value, tb) -> None:
    """An uncaught exception: its full traceback on the terminal and in the log."""
    text = "".join(traceback.format_exception(kind, value, tb))
    sys.stderr.write(text)
    sys.stderr.flush()
    path = _state.get("path")
    if path is not None:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
        except OSError:
            pass
