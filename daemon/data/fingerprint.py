"""A game database's commit fingerprint: equal fingerprints mean no transaction committed between them.

Read without SQLite (a few ``stat`` calls and 100-byte reads), so a fresh process can tell
"nothing changed since the export" in O(sources) instead of re-counting every game:

* the main file: identity, size, ``mtime_ns``, and the header's file change counter (offset
  24, bumped by every rollback-mode commit) and version-valid-for number (offset 92);
* the ``-wal``: size, ``mtime_ns`` and its 32-byte header (the salts change on every reset);
* the ``-shm`` wal-index header (both 48-byte copies): ``mxFrame``, the frame checksum and
  the salts move with every WAL commit, including commits that overwrite stale frames of a
  reset WAL without growing it.

A checkpoint, a reset or a writer's open transaction may change the fingerprint without a
row changing: that only costs a full check, never a wrong answer. A hot ``-journal`` (a
rollback-mode writer mid-transaction) or a sidecar that is not a regular file gives None:
no fingerprint, always the full check.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

Fingerprint = dict[str, Any]
_MAIN_FIELDS = ((24, 8), (92, 8))  # change counter + in-header page count; version-valid-for + SQLite version
_WAL_HEADER = 32
_SHM_HEADER = 96


def _read(path: str, length: int) -> tuple[os.stat_result, bytes] | None:
    """``fstat`` and the first ``length`` bytes of a regular file; None when absent or not regular."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never blocks on a FIFO swapped in
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path}: not a regular file")
        return st, os.pread(fd, length, 0)
    finally:
        os.close(fd)


def fingerprint(path: Path) -> Fingerprint | None:
    """The commit fingerprint of the database at ``path``, or None when it cannot be trusted."""
    name = str(path)
    try:
        if os.path.lexists(name + "-journal"):
            return None
        main = _read(name, 100)
        if main is None:
            return None
        st, head = main
        wal = _read(name + "-wal", _WAL_HEADER)
        shm = _read(name + "-shm", _SHM_HEADER)
    except OSError:
        return None
    return {
        "main": [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
        + [head[o : o + n].hex() for o, n in _MAIN_FIELDS],
        "wal": None if wal is None else [wal[0].st_size, wal[0].st_mtime_ns, wal[1].hex()],
        "shm": None if shm is None else shm[1].hex(),
    }


def fingerprints(paths: list[Path]) -> dict[str, Fingerprint | None]:
    return {str(p): fingerprint(p) for p in paths}


def unchanged(recorded: Any, current: dict[str, Fingerprint | None]) -> bool:
    """Whether ``recorded`` (from a cache entry) proves no commit since: every source, none None."""
    if not isinstance(recorded, dict) or set(recorded) != set(current):
        return False
    return all(fp is not None and recorded[p] == fp for p, fp in current.items())
