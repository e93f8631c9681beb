"""The SQLite record store (``sqlite:///PATH``): one node, a file on local disk (never NFS).

``BEGIN IMMEDIATE`` makes every write transaction exclusive for the whole file, which is
what :mod:`daemon.registry.backend` asks of ``write(config)``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from daemon import sqlite
from daemon.registry.backend import Event, RecordTxn, Row, sqlite_path

SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS models (
        model_id TEXT PRIMARY KEY, config_key TEXT NOT NULL, version INTEGER NOT NULL,
        board_type TEXT NOT NULL, num_players INTEGER NOT NULL, created_at TEXT NOT NULL,
        stage TEXT NOT NULL CHECK (stage IN ('candidate', 'production', 'archived')),
        status TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
        data_hash TEXT, data_path TEXT, source_snapshot TEXT, source_data_paths TEXT NOT NULL,
        training_config TEXT NOT NULL, metrics TEXT NOT NULL, checkpoint_metadata TEXT,
        parent_model_id TEXT REFERENCES models(model_id), parent_version INTEGER,
        run_id TEXT, fencing_token INTEGER, UNIQUE (config_key, version))""",
    "CREATE UNIQUE INDEX IF NOT EXISTS one_production ON models(config_key) WHERE stage = 'production'",
    "CREATE INDEX IF NOT EXISTS models_sha ON models(sha256)",
    "CREATE TABLE IF NOT EXISTS fences (config_key TEXT PRIMARY KEY, last_token INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS stage_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT, model_id TEXT NOT NULL, config_key TEXT NOT NULL,
        event TEXT NOT NULL, from_stage TEXT, to_stage TEXT, reason TEXT NOT NULL, at TEXT NOT NULL,
        fencing_token INTEGER)""",
    # History is append-only: the audit trail must not be rewritten.
    """CREATE TRIGGER IF NOT EXISTS stage_events_no_update BEFORE UPDATE ON stage_events
       BEGIN SELECT RAISE(ABORT, 'stage_events is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS stage_events_no_delete BEFORE DELETE ON stage_events
       BEGIN SELECT RAISE(ABORT, 'stage_events is append-only'); END""",
)


class _Txn:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def last_token(self, config: str) -> int | None:
        row = self.conn.execute("SELECT last_token FROM fences WHERE config_key = ?", (config,)).fetchone()
        return int(row[0]) if row else None

    def raise_token(self, config: str, token: int) -> bool:
        cur = self.conn.execute(
            "INSERT INTO fences (config_key, last_token) VALUES (?, ?) ON CONFLICT (config_key) "
            "DO UPDATE SET last_token = excluded.last_token WHERE last_token <= excluded.last_token",
            (config, token),
        )
        return cur.rowcount == 1

    def next_version(self, config: str) -> int:
        row = self.conn.execute(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM models WHERE config_key = ?", (config,)
        ).fetchone()
        return int(row[0])

    def model(self, model_id: str) -> Row | None:
        row = self.conn.execute("SELECT * FROM models WHERE model_id = ?", (model_id,)).fetchone()
        return dict(row) if row is not None else None

    def production_id(self, config: str) -> str | None:
        row = self.conn.execute(
            "SELECT model_id FROM models WHERE config_key = ? AND stage = 'production'", (config,)
        ).fetchone()
        return str(row[0]) if row else None

    def insert_model(self, row: Row) -> None:
        cols = ", ".join(row)
        self.conn.execute(
            f"INSERT INTO models ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
        )

    def set_stage(self, model_id: str, stage: str) -> None:
        self.conn.execute("UPDATE models SET stage = ? WHERE model_id = ?", (stage, model_id))

    def set_status(self, model_id: str, status: str) -> None:
        self.conn.execute("UPDATE models SET status = ? WHERE model_id = ?", (status, model_id))

    def add_event(self, event: Event) -> None:
        self.conn.execute(
            "INSERT INTO stage_events (model_id, config_key, event, from_stage, to_stage, reason, at, "
            "fencing_token) VALUES (?,?,?,?,?,?,?,?)",
            event,
        )

    def digest_referenced(self, digest: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM models WHERE sha256 = ? LIMIT 1", (digest,)).fetchone()
        return row is not None

    def digests(self) -> set[str]:
        return {str(r[0]) for r in self.conn.execute("SELECT DISTINCT sha256 FROM models")}


class SqliteRecordStore:
    """Thread-safe: one connection behind a lock (the registry is used from worker threads)."""

    def __init__(self, url: str, *, busy_timeout: float = 30.0, read_only: bool = False) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.busy_timeout = busy_timeout
        self.read_only = read_only
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    def open(self) -> None:
        with self._lock:
            if self._conn is None and self.read_only:
                self._conn = sqlite.snapshot(self.path, schema=_SCHEMA, schema_version=SCHEMA_VERSION)
                self._conn.row_factory = sqlite3.Row
            elif self._conn is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite.connect(
                    self.path,
                    busy_timeout=self.busy_timeout,
                    foreign_keys=True,
                    row_factory=True,
                    schema=_SCHEMA,
                    schema_version=SCHEMA_VERSION,
                )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        self.open()
        assert self._conn is not None
        return self._conn

    @contextmanager
    def write(self, config: str | None) -> Iterator[RecordTxn]:
        with self._lock, sqlite.immediate(self._db()) as conn:
            yield _Txn(conn)

    def _select(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        with self._lock:
            return [dict(r) for r in self._db().execute(sql, args).fetchall()]

    def models(
        self,
        *,
        model_id: str | None = None,
        config: str | None = None,
        stage: str | None = None,
        status: str | None = None,
        newest_only: bool = False,
    ) -> list[Row]:
        clauses, args = [], []
        for col, val in (
            ("model_id", model_id),
            ("config_key", config),
            ("stage", stage),
            ("status", status),
        ):
            if val is not None:
                clauses.append(f"{col} = ?")
                args.append(val)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        order = "ORDER BY config_key, version" + (" DESC LIMIT 1" if newest_only else "")
        return self._select(f"SELECT * FROM models {where} {order}", tuple(args))

    def events(self, *, model_id: str | None = None, config: str | None = None) -> list[Row]:
        if model_id is not None:
            return self._select("SELECT * FROM stage_events WHERE model_id = ? ORDER BY id", (model_id,))
        if config is not None:
            return self._select("SELECT * FROM stage_events WHERE config_key = ? ORDER BY id", (config,))
        return self._select("SELECT * FROM stage_events ORDER BY id")

    def last_token(self, config: str) -> int:
        rows = self._select("SELECT last_token FROM fences WHERE config_key = ?", (config,))
        return int(rows[0]["last_token"]) if rows else 0

    def last_token_overall(self) -> int:
        rows = self._select("SELECT COALESCE(MAX(last_token), 0) AS t FROM fences")
        return int(rows[0]["t"])
