"""The one way this package opens its own SQLite files (journal, decide state, registry).

Game databases are someone else's and are opened read-only by :mod:`daemon.data`;
everything here is a file the daemon owns: autocommit (explicit transactions only),
WAL, a busy timeout, and ``immediate`` for every read-then-write.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

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
        if schema and conn.execute("PRAGMA user_version").fetchone()[0] < schema_version:
            with immediate(conn):
                for stmt in schema:
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {int(schema_version)}")
    except BaseException:
        conn.close()
        raise
    return conn


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
