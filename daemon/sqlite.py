"""The one way this package opens its own SQLite files (journal, decide state, registry).

Game databases are someone else's and are opened read-only by :mod:`daemon.data`;
everything here is a file the daemon owns: autocommit (explicit transactions only),
WAL, a busy timeout, and ``immediate`` for every read-then-write.

:func:`snapshot` is the read-only face (``status``, ``health``): an in-memory copy of the
file as it is on disk, so the same code can compute on it and nothing is ever written
back, and a missing file is an empty state instead of a new file.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import quote

Synchronous = Literal["OFF", "NORMAL", "FULL"]


def connect(
    path: Path,
    *,
    busy_timeout: float = 10.0,
    synchronous: Synchronous = "FULL",
    foreign_keys: bool = False,
    row_factory: bool = False,
    schema: Sequence[str] = (),
    schema_version: int = 0,
) -> sqlite3.Connection:
    """An autocommit connection usable from any thread (callers serialise access).

    ``schema`` statements run once, in one ``BEGIN IMMEDIATE``, while ``PRAGMA user_version``
    is below ``schema_version``; a file already at that version is never write-locked by
    opening it.
    """
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        if row_factory:
            conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        ensure_schema(conn, schema, schema_version)
    except BaseException:
        conn.close()
        raise
    return conn


def ensure_schema(conn: sqlite3.Connection, schema: Sequence[str], schema_version: int) -> None:
    """Run ``schema`` once, in one ``BEGIN IMMEDIATE``, while ``user_version`` is below the version."""
    if schema and conn.execute("PRAGMA user_version").fetchone()[0] < schema_version:
        with immediate(conn):
            for stmt in schema:
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {int(schema_version)}")


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction that takes the write lock up front.

    A deferred read-then-write in WAL mode would fail with ``SQLITE_BUSY_SNAPSHOT``
    regardless of the busy timeout.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def snapshot(
    path: Path, *, busy_timeout: float = 10.0, schema: Sequence[str] = (), schema_version: int = 0
) -> sqlite3.Connection:
    """An in-memory copy of ``path``, or an empty one with ``schema`` if absent.

    Writes to the copy stay in memory; the file, its directory, its ``-wal`` and ``-shm`` are
    never created or changed.
    """
    mem = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    try:
        if path.is_file() and not _copy_quiet_file(path, mem):
            # A writer has it open (its -wal exists): read through SQLite, which sees the WAL.
            uri = f"file:{quote(str(path.absolute()))}?mode=ro"
            src = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
            try:
                src.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
                src.backup(mem)
            finally:
                src.close()
        ensure_schema(mem, schema, schema_version)
    except BaseException:
        mem.close()
        raise
    return mem


def _copy_quiet_file(path: Path, mem: sqlite3.Connection) -> bool:
    """Load a database no connection has open straight from its bytes (True), else False.

    Opening a WAL database through SQLite, even ``mode=ro``, creates ``-wal``/``-shm`` beside it.
    With no ``-wal`` the main file is complete; its stat before and after the read proves no
    writer touched it meanwhile. The header's WAL marker (bytes 18-19 = 2) is reset to the
    rollback format, since an in-memory database cannot be in WAL mode.
    """
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        return False
    before = path.stat()
    data = bytearray(path.read_bytes())
    after = path.stat()
    if wal.exists() or (before.st_mtime_ns, before.st_size) != (after.st_mtime_ns, after.st_size):
        return False
    if len(data) >= 100 and data[18:20] == b"\x02\x02":
        data[18:20] = b"\x01\x01"
    mem.deserialize(bytes(data))
    return True
