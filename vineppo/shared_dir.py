"""Every rank must see the same run directory (multi-node runs need a shared filesystem).

The checkpoint is assembled in the run directory by every rank (sharded optimizer states written
by their owners, the weights by rank 0, then renamed by rank 0), and the stop file
(`loop.STOP_FILE`) is looked for there by every rank. On two nodes whose `--output-dir` is a
node-local disk, each node would write into its own directory: a checkpoint would be missing
the other node's shards, and the run would fail only at its first save or resume, hours in.

`check_shared_run_dir` finds this at start: rank 0 writes a token file holding a random nonce
into the run directory, broadcasts the nonce, and every rank reads the file and compares. A
rank that cannot read it, or reads another nonce (a same-named directory on its own disk from
an earlier run), fails the check; every rank then raises the same error, naming the path and
the hosts that do not see it.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path

#: the token file rank 0 writes (and removes once every rank has read it)
TOKEN_FILE = ".shared_run_dir_token"


class RunDirNotShared(RuntimeError):
    """Some rank does not see the run directory rank 0 prepared."""


def write_token(run_dir: Path) -> str:
    """Rank 0: a fresh nonce into `run_dir / TOKEN_FILE` (written whole, then renamed into place)."""
    nonce = secrets.token_hex(16)
    path = Path(run_dir) / TOKEN_FILE
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(nonce)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return nonce


def read_token(run_dir: Path, nonce: str, wait_s: float = 10.0, poll_s: float = 0.5) -> str | None:
    """None when `run_dir / TOKEN_FILE` holds `nonce`, else what this rank saw instead. Retried for
    up to `wait_s` seconds: a network filesystem may show another node's new file a little late."""
    path = Path(run_dir) / TOKEN_FILE
    deadline = time.monotonic() + wait_s
    while True:
        try:
            seen = path.read_text().strip()
            problem = None if seen == nonce else "holds another run's token"
        except FileNotFoundError:
            problem = "does not exist" if Path(run_dir).is_dir() else "its directory does not exist"
        except OSError as e:
            problem = f"cannot be read ({e.strerror or e})"
        if problem is None or time.monotonic() >= deadline:
            return problem
        time.sleep(poll_s)


def describe_failures(run_dir: Path, results: list[tuple[int, str, str | None]]) -> str | None:
    """The error message for (rank, host, problem) of every rank, or None when every rank saw the token."""
    bad = [(rank, host, problem) for rank, host, problem in results if problem is not None]
    if not bad:
        return None
    hosts = sorted({host for _, host, _ in bad})
    ranks = ", ".join(f"{rank} on {host}: {problem}" for rank, host, problem in bad[:8])
    more = f" (and {len(bad) - 8} more)" if len(bad) > 8 else ""
    return (f"the run directory {Path(run_dir).resolve()} is not shared by every rank: "
            f"{len(bad)} of {len(results)} ranks do not see the token file {TOKEN_FILE} rank 0 wrote "
            f"there (rank {ranks}{more}). Multi-node runs need --output-dir on a filesystem every node mounts "
            f"at the same path (NFS, Lustre, GPFS...), because checkpoints are assembled there from "
            f"every rank's files; hosts without it: {', '.join(hosts)}")


def check_shared_run_dir(acc, run_dir: Path, wait_s: float = 10.0) -> None:
    """Raise `RunDirNotShared` on every rank unless every rank sees the run directory rank 0 prepared.
    Call it on every rank after rank 0 created `run_dir` (collectives: one broadcast, one gather)."""
    if acc.num_processes == 1:
        return
    from accelerate.utils import broadcast_object_list, gather_object

    # rank 0's nonce and its name for the directory: every rank raises the same message
    sent = [(write_token(run_dir), str(Path(run_dir).resolve())) if acc.is_main_process else None]
    broadcast_object_list(sent, from_process=0)
    nonce, prepared = sent[0]
    problem = read_token(run_dir, nonce, wait_s)
    results = gather_object([(acc.process_index, socket.gethostname(), problem)])
    if acc.is_main_process:
        Path(run_dir, TOKEN_FILE).unlink(missing_ok=True)
    message = describe_failures(prepared, results)
    if message is not None:
        raise RunDirNotShared(message)
