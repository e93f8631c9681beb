"""A game database's commit fingerprint: equal fingerprints mean no transaction committed between them.

``stat`` calls only, so a fresh process can tell "nothing changed since the export" in
O(sources) instead of re-counting every game. Every commit writes the main file (rollback
mode) or the ``-wal`` (WAL mode, also when it overwrites the stale frames of a reset WAL
without growing it), which moves that file's ``mtime``:

* the main file: identity, size, ``mtime_ns``;
* the ``-wal``: size, ``mtime_ns`` (or absent).

Not ``ctime``: a reader running as root changes it (SQLite ``fchown``s the sidecars it opens
to the database's owner) without any commit.

Never ``open``: closing any descriptor of a database file drops every POSIX lock this
process holds on it, including SQLite's own (its connections' locks, the ``-shm`` recovery
lock), and another process may then reinitialise a ``-shm`` this process has mapped.

File times tick coarsely (a kernel jiffy), so a commit in the same tick as a fingerprint
could leave it unchanged. As git does with a racily clean index, a fingerprint whose newest
file time is within :data:`RACY_NS` of ``now`` is not trusted (None), and neither is one
with a hot ``-journal`` (a rollback-mode writer mid-transaction) or a sidecar that is not a
regular file. None only costs the full check, never a wrong answer; a checkpoint or a
writer's open transaction may change a fingerprint without a row changing, likewise.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

Fingerprint = list[Any]
RACY_NS = 100_000_000  # 0.1 s: far above any file-time granularity


def fingerprint(path: Path, now_ns: int) -> Fingerprint | None:
    """The commit fingerprint of the database at ``path`` as of ``now_ns``, or None (untrusted)."""
    name = str(path)
    try:
        if os.path.lexists(name + "-journal"):
            return None
        main = os.stat(name)
        try:
            wal: os.stat_result | None = os.stat(name + "-wal")
        except FileNotFoundError:
            wal = None
    except OSError:
        return None
    files = [main] if wal is None else [main, wal]
    if not all(stat.S_ISREG(st.st_mode) for st in files):
        return None
    if max(st.st_mtime_ns for st in files) > now_ns - RACY_NS:
        return None
    out: Fingerprint = [main.st_dev, main.st_ino, main.st_size, main.st_mtime_ns]
    out.append(None if wal is None else [wal.st_size, wal.st_mtime_ns])
    return out


def fingerprints(paths: list[Path], now_ns: int) -> dict[str, Fingerprint | None]:
    return {str(p): fingerprint(p, now_ns) for p in paths}


def unchanged(recorded: Any, current: dict[str, Fingerprint | None]) -> bool:
    """Whether ``recorded`` (from a cache entry) proves no commit since: every source, none None."""
    if not isinstance(recorded, dict) or set(recorded) != set(current):
        return False
    return all(fp is not None and recorded[p] == fp for p, fp in current.items())
