"""The statements both SQL record stores run, written once with ``?`` placeholders.

A backend supplies one function, ``run(sql, args) -> cursor`` (rows readable by column
name, ``rowcount`` set), converting placeholders for its driver; everything else here is
the same text on SQLite and PostgreSQL (both accept ``INSERT ... ON CONFLICT ... DO UPDATE``
with ``excluded``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from daemon.registry.backend import Event, Row


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


Run = Callable[[str, tuple[Any, ...]], Cursor]

RUN_COLUMNS = (
    "run_id",
    "config_key",
    "node",
    "state",
    "started_at",
    "updated_at",
    "finished_at",
    "usable_games",
    "model_id",
    "message",
    "fencing_token",
)
# A run's config and start time are fixed by its first write; a finished run is never changed.
_UPSERT_RUN = (
    f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join('?' * len(RUN_COLUMNS))}) "
    "ON CONFLICT (run_id) DO UPDATE SET state = excluded.state, node = excluded.node, "
    "updated_at = excluded.updated_at, "
    "finished_at = COALESCE(excluded.finished_at, runs.finished_at), "
    "usable_games = COALESCE(excluded.usable_games, runs.usable_games), "
    "model_id = COALESCE(excluded.model_id, runs.model_id), "
    "message = COALESCE(excluded.message, runs.message), "
    "fencing_token = COALESCE(excluded.fencing_token, runs.fencing_token) "
    "WHERE runs.config_key = excluded.config_key AND runs.finished_at IS NULL"
)


class SqlTxn:
    """:class:`~daemon.registry.backend.RecordTxn` over one open write transaction."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def last_token(self, config: str) -> int | None:
        row = self.run("SELECT last_token FROM fences WHERE config_key = ?", (config,)).fetchone()
        return int(row["last_token"]) if row else None

    def raise_token(self, config: str, token: int) -> bool:
        cur = self.run(
            "INSERT INTO fences (config_key, last_token) VALUES (?, ?) ON CONFLICT (config_key) "
            "DO UPDATE SET last_token = excluded.last_token WHERE fences.last_token <= excluded.last_token",
            (config, token),
        )
        return cur.rowcount == 1

    def next_version(self, config: str) -> int:
        row = self.run(
            "SELECT COALESCE(MAX(version), 0) + 1 AS v FROM models WHERE config_key = ?", (config,)
        ).fetchone()
        return int(row["v"])

    def model(self, model_id: str) -> Row | None:
        row = self.run("SELECT * FROM models WHERE model_id = ?", (model_id,)).fetchone()
        return dict(row) if row is not None else None

    def production_id(self, config: str) -> str | None:
        row = self.run(
            "SELECT model_id FROM models WHERE config_key = ? AND stage = 'production'", (config,)
        ).fetchone()
        return str(row["model_id"]) if row else None

    def insert_model(self, row: Row) -> None:
        cols = ", ".join(row)
        self.run(f"INSERT INTO models ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values()))

    def set_stage(self, model_id: str, stage: str) -> None:
        self.run("UPDATE models SET stage = ? WHERE model_id = ?", (stage, model_id))

    def set_status(self, model_id: str, status: str) -> None:
        self.run("UPDATE models SET status = ? WHERE model_id = ?", (status, model_id))

    def add_event(self, event: Event) -> None:
        self.run(
            "INSERT INTO stage_events (model_id, config_key, event, from_stage, to_stage, reason, at, "
            "fencing_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            event,
        )

    def digest_referenced(self, digest: str) -> bool:
        row = self.run("SELECT 1 AS one FROM models WHERE sha256 = ? LIMIT 1", (digest,)).fetchone()
        return row is not None

    def digests(self) -> set[str]:
        return {str(r["sha256"]) for r in self.run("SELECT DISTINCT sha256 FROM models", ()).fetchall()}


class SqlReads:
    """The read side and run history of :class:`~daemon.registry.backend.RecordStore`.

    Subclasses provide ``_select`` (rows as dicts, outside any write transaction) and
    ``_execute`` (one autocommitted statement, returning its row count)."""

    def _select(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        raise NotImplementedError

    def _execute(self, sql: str, args: tuple[Any, ...]) -> int:
        raise NotImplementedError

    def models(
        self,
        *,
        model_id: str | None = None,
        config: str | None = None,
        stage: str | None = None,
        status: str | None = None,
        newest_only: bool = False,
    ) -> list[Row]:
        where, args = _where(model_id=model_id, config_key=config, stage=stage, status=status)
        order = "ORDER BY config_key, version" + (" DESC LIMIT 1" if newest_only else "")
        return self._select(f"SELECT * FROM models {where} {order}", args)

    def events(self, *, model_id: str | None = None, config: str | None = None) -> list[Row]:
        if model_id is not None:
            where, args = _where(model_id=model_id)
        else:
            where, args = _where(config_key=config)
        return self._select(f"SELECT * FROM stage_events {where} ORDER BY id", args)

    def last_token(self, config: str) -> int:
        rows = self._select("SELECT last_token FROM fences WHERE config_key = ?", (config,))
        return int(rows[0]["last_token"]) if rows else 0

    def last_token_overall(self) -> int:
        rows = self._select("SELECT COALESCE(MAX(last_token), 0) AS t FROM fences")
        return int(rows[0]["t"])

    def upsert_run(self, row: Row) -> bool:
        return self._execute(_UPSERT_RUN, tuple(row[c] for c in RUN_COLUMNS)) == 1

    def runs(
        self,
        *,
        run_id: str | None = None,
        config: str | None = None,
        state: str | None = None,
        limit: int | None = None,
    ) -> list[Row]:
        where, args = _where(run_id=run_id, config_key=config, state=state)
        tail = f" LIMIT {int(limit)}" if limit is not None else ""
        return self._select(f"SELECT * FROM runs {where} ORDER BY started_at DESC, run_id DESC{tail}", args)


def _where(**filters: Any) -> tuple[str, tuple[Any, ...]]:
    used = [(col, val) for col, val in filters.items() if val is not None]
    if not used:
        return "", ()
    return "WHERE " + " AND ".join(f"{col} = ?" for col, _ in used), tuple(val for _, val in used)
