"""The SQLite record store (``sqlite:///PATH``): one node, a file on local disk (never NFS).

``BEGIN IMMEDIATE`` makes every write transaction exclusive for the whole file, which is
what :mod:`daemon.registry.backend` asks of ``write(config)``. The schema version is
``PRAGMA user_version``; opening applies the missing migration steps in one
``BEGIN IMMEDIATE`` (a file already current is never write-locked by opening it).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from daemon import sqlite
from daemon.registry import migrations
from daemon.registry.backend import RecordTxn, Row, StoreOptions, sqlite_path
from daemon.registry.backends.sql import Cursor, SqlReads, SqlTxn
from daemon.registry.records import RegistryError


def migrate(conn: sqlite3.Connection, where: str) -> None:
    """Bring the file to :data:`~daemon.registry.migrations.SCHEMA_VERSION` (or refuse a newer one)."""
    if not migrations.pending(_version(conn), where):
        return
    with sqlite.immediate(conn):
        current = _version(conn)  # another process may have migrated while we waited
        steps = migrations.pending(current, where)
        if not steps:
            return
        at = datetime.now(UTC).isoformat()
        conn.execute(migrations.MIGRATIONS_TABLE)
        if current >= 1:  # a v1 file predates schema_migrations
            conn.execute(
                "INSERT OR IGNORE INTO schema_migrations VALUES (?, ?, ?)",
                (1, migrations.V1.description + " (found in place)", at),
            )
        for step in steps:
            for stmt in step.sqlite:
                conn.execute(stmt)
            conn.execute(migrations.RECORD_MIGRATION, (step.version, step.description, at))
            conn.execute(f"PRAGMA user_version = {int(step.version)}")


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


class SqliteRecordStore(SqlReads):
    """Thread-safe: one connection behind a lock (the registry is used from worker threads)."""

    def __init__(self, url: str, options: StoreOptions | None = None) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.options = options or StoreOptions()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def open(self) -> None:
        with self._lock:
            if self._conn is not None:
                return
            if self.options.read_only:
                # status, list, show: a copy of the file (or an empty one); nothing created or written.
                conn = sqlite.snapshot(self.path, busy_timeout=self.options.busy_timeout)
                conn.row_factory = sqlite3.Row
                migrate(conn, f"{self.path} (read-only copy)")
                self._conn = conn
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite.connect(self.path, busy_timeout=self.options.busy_timeout, row_factory=True)
            except (OSError, sqlite3.Error) as e:
                raise RegistryError(f"registry database {self.path}: cannot open: {e}") from None
            try:
                migrate(conn, str(self.path))
            except sqlite3.Error as e:
                conn.close()
                raise RegistryError(f"registry database {self.path}: cannot migrate: {e}") from None
            except BaseException:
                conn.close()
                raise
            self._conn = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        self.open()
        assert self._conn is not None
        return self._conn

    def _run(self, sql: str, args: tuple[Any, ...]) -> Cursor:
        return self._db().execute(sql, args)

    def schema_version(self) -> int:
        with self._lock:
            return _version(self._db())

    @contextmanager
    def write(self, config: str | None) -> Iterator[RecordTxn]:
        with self._lock, sqlite.immediate(self._db()):
            yield SqlTxn(self._run)

    def _select(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        with self._lock:
            return [dict(r) for r in self._db().execute(sql, args).fetchall()]

    def _execute(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock:
            return self._db().execute(sql, args).rowcount
