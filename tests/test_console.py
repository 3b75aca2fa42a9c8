"""vineppo.console: third-party output goes to the log file, ours stays on the terminal, -v shows all.

Each case runs a fresh Python process (the console set-up is process-wide: file descriptor 2,
logging handlers, the warnings filter) that emits one line through every channel a library uses."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

EMIT = textwrap.dedent('''
    import logging, os, sys, warnings
    from vineppo.console import setup_console
    setup_console(sys.argv[1], verbose=sys.argv[2] == "1")
    # third party: a module outside vineppo.*
    third = {"__name__": "thirdparty.mod"}
    exec(compile(
        "import logging, sys, warnings\\n"
        "from tqdm.auto import tqdm\\n"
        "warnings.warn('TP-WARNING reduce_op is deprecated', FutureWarning)\\n"
        "logging.getLogger('vllm.worker').warning('TP-LOG numa binding')\\n"
        "own = logging.getLogger('DeepSpeedLike'); own.propagate = False\\n"
        "h = logging.StreamHandler(sys.stdout); own.addHandler(h)\\n"
        "own.warning('TP-OWNHANDLER accelerator set to CPU')\\n"
        "for _ in tqdm(range(3), desc='TP-BAR loading shards'): pass\\n",
        "thirdparty/mod.py", "exec"), third)
    os.write(2, b"TP-CLEVEL utils.cpp:68 NUMA warning\\n")
    logging.getLogger("vllm.worker").error("TP-ERROR engine died")
    # ours
    from tqdm.auto import tqdm
    logging.getLogger("vineppo.loop").info("OURS-LOG iteration 1/2")
    for _ in tqdm(range(3), desc="OURS-BAR sft"): pass
    print("OURS-RESULT pass@1 12.5")
    print("OURS-ERROR vineppo train: data error: x.jsonl, line 3", file=sys.stderr)
    raise RuntimeError("OURS-TRACEBACK boom")
''')


def _run(tmp_path: Path, verbose: bool):
    log = tmp_path / "run" / "log.txt"
    p = subprocess.run([sys.executable, "-c", EMIT, str(log), "1" if verbose else "0"], capture_output=True,
                       text=True, cwd=REPO, env={**__import__("os").environ, "PYTHONPATH": str(REPO)}, timeout=120)
    return p, log.read_text()


THIRD = ["TP-WARNING", "TP-LOG", "TP-OWNHANDLER", "TP-BAR", "TP-CLEVEL"]
OURS = ["OURS-LOG", "OURS-BAR", "OURS-RESULT", "OURS-ERROR", "OURS-TRACEBACK", "TP-ERROR"]


def test_third_party_output_goes_to_the_log_and_ours_to_the_terminal(tmp_path):
    p, log = _run(tmp_path, verbose=False)
    terminal = p.stdout + p.stderr
    assert p.returncode == 1  # the uncaught exception
    for tag in THIRD:
        assert tag not in terminal, (tag, terminal)
        assert tag in log, (tag, log)
    for tag in OURS:  # our lines, results, errors and any library's ERROR record
        assert tag in terminal, (tag, terminal)
    # the full traceback (every frame) on the terminal
    assert "Traceback (most recent call last)" in p.stderr and 'File "<string>", line 25, in <module>' in p.stderr
    assert "RuntimeError: OURS-TRACEBACK boom" in p.stderr
    assert "OURS-TRACEBACK" in log  # the traceback is in the log as well
    assert "OURS-RESULT" in p.stdout and "OURS-ERROR" in p.stderr


def test_verbose_shows_third_party_output_too(tmp_path):
    p, log = _run(tmp_path, verbose=True)
    terminal = p.stdout + p.stderr
    for tag in THIRD + OURS:
        assert tag in terminal, (tag, terminal)
    assert "TP-WARNING" in log and "OURS-LOG" in log  # still logged


def test_cli_log_file_per_command(tmp_path):
    from vineppo.cli import _add_verbose, _log_file, build_parser, parse_args

    parser = build_parser()
    _add_verbose(parser)

    def args(*argv):
        return parse_args(parser, list(argv))

    assert _log_file(args("train", "--config", "c.yaml", "--output-dir", "runs/a")) == "runs/a/log.txt"
    assert _log_file(args("demo", "--output-dir", "D")) == "D/log.txt"
    assert _log_file(args("compare", "r1", "r2", "--output-dir", "cmp")) == "cmp/log.txt"
    assert _log_file(args("eval", "--run", "runs/a")) == "runs/a/log.txt"
    assert _log_file(args("eval", "--checkpoint", "ck")) == "ck/eval/log.txt"
    assert _log_file(args("sft", "--model", "m", "--task", "gsm8k", "--output-dir", "out/")) == "out.log.txt"
    # -v before or after the sub-command
    assert args("-v", "demo").verbose is True
    assert args("demo", "-v").verbose is True
    assert args("demo").verbose is False
