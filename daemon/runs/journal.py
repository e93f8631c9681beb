"""The run journal: every run is recorded durably before each step.

A run moves ``pending -> exporting -> training -> registering -> succeeded``
or ends ``failed`` / ``interrupted``. After a crash, the runs still in a
non-final state are exactly the ones the restarted daemon must resolve.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon import sqlite

STATES = ("pending", "exporting", "training", "registering", "succeeded", "failed", "interrupted")
FINAL_STATES = frozenset({"succeeded", "failed", "interrupted"})

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    state TEXT NOT NULL,
    node TEXT NOT NULL,
    pid INTEGER NOT NULL,
    fencing_token INTEGER,
    lock_backend TEXT,
    usable_games INTEGER,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finished_at TEXT,
    export_seconds REAL,
    training_seconds REAL,
    model_id TEXT,
    message TEXT,
    details TEXT NOT NULL DEFAULT '{}'
)""",
    """CREATE INDEX IF NOT EXISTS idx_runs_config ON runs(config, started_at)""",
    """CREATE INDEX IF NOT EXISTS idx_runs_state ON runs(state)""",
)
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    config: str
    state: str
    node: str
    pid: int
    fencing_token: int | None
    lock_backend: str | None
    usable_games: int | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    export_seconds: float | None
    training_seconds: float | None
    model_id: str | None
    message: str | None
    details: dict[str, Any]

    @property
    def in_flight(self) -> bool:
        return self.state not in FINAL_STATES

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("started_at", "updated_at", "finished_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d


def _ts(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


class RunJournal:
    """SQLite journal (WAL, synchronous=FULL). ``open()``/``close()`` do the I/O."""

    def __init__(self, path: Path, *, node: str | None = None, pid: int = 0, read_only: bool = False) -> None:
        self.path = path
        self.node = node or socket.gethostname()
        self.pid = pid
        # read_only (status): an in-memory copy of the journal; nothing is written back.
        self.read_only = read_only
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        if self.read_only:
            self._conn = sqlite.snapshot(self.path, schema=_SCHEMA, schema_version=SCHEMA_VERSION)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite.connect(self.path, schema=_SCHEMA, schema_version=SCHEMA_VERSION)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RunJournal:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("RunJournal is not open")
        return self._conn

    def start(self, config: str, *, now: datetime, usable_games: int | None = None) -> str:
        run_id = f"{config}-{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        with self._lock:
            self.conn.execute(
                "INSERT INTO runs(run_id, config, state, node, pid, usable_games, started_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    config,
                    "pending",
                    self.node,
                    self.pid,
                    usable_games,
                    now.isoformat(),
                    now.isoformat(),
                ),
            )
        return run_id

    def update(self, run_id: str, *, now: datetime, state: str | None = None, **fields: Any) -> None:
        """Record a step (and any of the columns) durably before it happens."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        cols: dict[str, Any] = {"updated_at": now.isoformat()}
        if state is not None:
            cols["state"] = state
            if state in FINAL_STATES:
                cols["finished_at"] = now.isoformat()
        details = fields.pop("details", None)
        cols.update(fields)
        sets = ", ".join(f"{k}=?" for k in cols)
        with self._lock:
            self.conn.execute(f"UPDATE runs SET {sets} WHERE run_id=?", (*cols.values(), run_id))
            if details:
                row = self.conn.execute("SELECT details FROM runs WHERE run_id=?", (run_id,)).fetchone()
                merged = {**json.loads(row[0] if row else "{}"), **details}
                self.conn.execute("UPDATE runs SET details=? WHERE run_id=?", (json.dumps(merged), run_id))

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[RunRecord]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT run_id, config, state, node, pid, fencing_token, lock_backend, usable_games,"
                " started_at, updated_at, finished_at, export_seconds, training_seconds, model_id, message,"
                " details FROM runs " + sql,
                params,
            ).fetchall()
        out = []
        for r in rows:
            started, updated = _ts(r[8]), _ts(r[9])
            assert started is not None and updated is not None
            out.append(
                RunRecord(
                    run_id=r[0],
                    config=r[1],
                    state=r[2],
                    node=r[3],
                    pid=r[4],
                    fencing_token=r[5],
                    lock_backend=r[6],
                    usable_games=r[7],
                    started_at=started,
                    updated_at=updated,
                    finished_at=_ts(r[10]),
                    export_seconds=r[11],
                    training_seconds=r[12],
                    model_id=r[13],
                    message=r[14],
                    details=json.loads(r[15] or "{}"),
                )
            )
        return out

    def get(self, run_id: str) -> RunRecord | None:
        rows = self._rows("WHERE run_id=?", (run_id,))
        return rows[0] if rows else None

    def in_flight(self, *, node: str | None = None) -> list[RunRecord]:
        states = ",".join(f"'{s}'" for s in FINAL_STATES)
        if node is None:
            return self._rows(f"WHERE state NOT IN ({states}) ORDER BY started_at")
        return self._rows(f"WHERE state NOT IN ({states}) AND node=? ORDER BY started_at", (node,))

    def recent(self, config: str | None = None, limit: int = 20) -> list[RunRecord]:
        if config is None:
            return self._rows("ORDER BY started_at DESC LIMIT ?", (limit,))
        return self._rows("WHERE config=? ORDER BY started_at DESC LIMIT ?", (config, limit))

    def last_success(self, config: str) -> RunRecord | None:
        rows = self._rows("WHERE config=? AND state='succeeded' ORDER BY finished_at DESC LIMIT 1", (config,))
        return rows[0] if rows else None

    def last_finished(self, config: str) -> RunRecord | None:
        rows = self._rows(
            "WHERE config=? AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1", (config,)
        )
        return rows[0] if rows else None


def utcnow() -> datetime:
    return datetime.now(UTC)
