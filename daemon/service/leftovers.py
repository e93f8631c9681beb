"""Helper processes of a previous service on this data directory: marked, then reaped at start.

The export's forkserver, its workers and multiprocessing's resource tracker are started by
:mod:`multiprocessing`, which gives them this process's environment and nothing else. So the
service marks its own environment with a token of its data directory (``RINGRIFT_INSTANCE``)
right after it takes the instance lock, and every such helper carries it. They die with their
parent (a parent-death signal, :mod:`daemon.export.workers`); any that still run at the next
start (one stopped, or started by a version without that signal) are found by the token and
killed. Under the instance lock no live service of this data directory can own them. Trainers
are not marked (the runner passes them an environment of their own); their pid records cover
them (:mod:`daemon.training.pidrecords`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import MutableMapping
from pathlib import Path

INSTANCE_ENV = "RINGRIFT_INSTANCE"


def instance_token(state_dir: Path) -> str:
    """Stable per data directory, across restarts and host names."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:24]


def mark_environment(environ: MutableMapping[str, str], state_dir: Path) -> None:
    """Put the token where multiprocessing's children inherit it (the process environment)."""
    environ[INSTANCE_ENV] = instance_token(state_dir)


def marked_pids(token: str, *, proc: Path = Path("/proc")) -> list[int]:
    """Live processes (not this one) whose environment carries ``RINGRIFT_INSTANCE=<token>``."""
    needle = f"{INSTANCE_ENV}={token}".encode()
    me = os.getpid()
    out: list[int] = []
    try:
        entries = list(os.scandir(proc))
    except OSError:
        return out
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"{entry.path}/environ", "rb") as f:
                env = f.read()
            state = Path(f"{entry.path}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone, or not ours to read
            continue
        if state != "Z" and needle in env.split(b"\0"):
            out.append(int(entry.name))
    return out


def reap_leftovers(state_dir: Path) -> list[int]:
    """SIGKILL the marked helpers of a previous service of this data directory; their pids.

    SIGCONT too: a stopped process receives SIGKILL, but a stopped parent would not reap the
    children it forked. Export helpers hold nothing worth a grace period: their segment files
    are temporary and the next export starts over."""
    pids = marked_pids(instance_token(state_dir))
    for pid in pids:
        for sig in (signal.SIGKILL, signal.SIGCONT):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
    return pids
