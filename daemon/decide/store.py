"""The decisions' state store: one SQLite file (``state_dir/decide.db``).

Curriculum results, trigger state, health state and alerts live here so a
restarted daemon rebuilds exactly the weights, decisions and alerts it had.
WAL, a busy timeout, autocommit reads and one short ``BEGIN IMMEDIATE``
transaction per write. Several objects (the curriculum and the health monitor)
may each open their own connection to the same file.

Style: the constructor only stores arguments; :meth:`open` creates the file
and schema, :meth:`close` closes the connection (also usable as a context
manager).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from daemon import sqlite

SCHEMA_VERSION = 2  # 2: promotion tests

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS curriculum_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    config TEXT NOT NULL, ts REAL NOT NULL, winner INTEGER NOT NULL, elo REAL
)""",
    """CREATE INDEX IF NOT EXISTS curriculum_results_config ON curriculum_results(config, id)""",
    """CREATE TABLE IF NOT EXISTS curriculum_training (
    config TEXT PRIMARY KEY, ts REAL, model_count INTEGER
)""",
    """CREATE TABLE IF NOT EXISTS ingested_games (
    config TEXT NOT NULL, game_id TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (config, game_id)
)""",
    """CREATE INDEX IF NOT EXISTS ingested_games_seq ON ingested_games(config, seq)""",
    """CREATE TABLE IF NOT EXISTS trigger_state (config TEXT PRIMARY KEY, state TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS health_configs (config TEXT PRIMARY KEY, state TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS health_alerts (
    config TEXT NOT NULL, kind TEXT NOT NULL, subject TEXT NOT NULL,
    severity TEXT NOT NULL, message TEXT NOT NULL, since REAL NOT NULL, external INTEGER NOT NULL,
    PRIMARY KEY (config, kind, subject)
)""",
    """CREATE TABLE IF NOT EXISTS promotion_state (config TEXT PRIMARY KEY, state TEXT NOT NULL)""",
    # The evaluation games a test counted: each game counts once, across restarts.
    """CREATE TABLE IF NOT EXISTS promotion_games (
    config TEXT NOT NULL, candidate TEXT NOT NULL, game_id TEXT NOT NULL,
    PRIMARY KEY (config, candidate, game_id)
)""",
    """INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', '2')""",
)


class StoreError(Exception):
    """The state store cannot be used (names the file)."""


class DecideStore:
    """A SQLite-backed store; the connection exists between :meth:`open` and :meth:`close`."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 5.0, read_only: bool = False) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        # read_only: work on an in-memory copy (status, health): nothing is written back.
        self.read_only = read_only
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def given(
        cls, store_or_path: DecideStore | Path | str, *, read_only: bool = False
    ) -> tuple[DecideStore, bool]:
        """A shared store as it is, or a new one for a path; and whether the caller owns it."""
        if isinstance(store_or_path, DecideStore):
            return store_or_path, False
        return cls(store_or_path, read_only=read_only), True

    # -- lifecycle ------------------------------------------------------------
    def open(self) -> DecideStore:
        if self._conn is not None:
            return self
        try:
            if self.read_only:
                conn = sqlite.snapshot(
                    self.path, busy_timeout=self.busy_timeout, schema=_SCHEMA, schema_version=SCHEMA_VERSION
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite.connect(
                    self.path,
                    busy_timeout=self.busy_timeout,
                    synchronous="NORMAL",
                    schema=_SCHEMA,
                    schema_version=SCHEMA_VERSION,
                )
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"{self.path}: not a usable state store: {e}") from e
        self._conn = conn
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> DecideStore:
        return self.open()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: state store is not open (call open())")
        return self._conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction."""
        with sqlite.immediate(self.conn) as c:
            yield c

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.conn.execute(sql, params).fetchall())

    # -- curriculum -----------------------------------------------------------
    def add_results(
        self,
        config: str,
        rows: Iterable[tuple[float, int, float | None]],
        limit: int,
        game_ids: Sequence[str] = (),
        ingested_limit: int = 0,
    ) -> None:
        """Append results (and the game ids they came from) in one transaction; trim to ``limit``."""
        with self.write() as c:
            c.executemany(
                "INSERT INTO curriculum_results(config, ts, winner, elo) VALUES (?,?,?,?)",
                [(config, ts, w, e) for ts, w, e in rows],
            )
            c.execute(
                "DELETE FROM curriculum_results WHERE config=? AND id NOT IN "
                "(SELECT id FROM curriculum_results WHERE config=? ORDER BY ts DESC, id DESC LIMIT ?)",
                (config, config, limit),
            )
            if game_ids:
                _add_ingested(c, config, game_ids, ingested_limit)

    def results(self, config: str | None = None) -> list[tuple[str, float, int, float | None]]:
        sql = "SELECT config, ts, winner, elo FROM curriculum_results"
        params: tuple[str, ...] = ()
        if config is not None:
            sql, params = sql + " WHERE config=?", (config,)
        rows = self.query(sql + " ORDER BY config, ts, id", params)
        return [(str(r[0]), float(r[1]), int(r[2]), None if r[3] is None else float(r[3])) for r in rows]

    def set_training(self, config: str, ts: float | None, model_count: int | None) -> None:
        with self.write() as c:
            c.execute(
                "INSERT INTO curriculum_training(config, ts, model_count) VALUES (?,?,?) "
                "ON CONFLICT(config) DO UPDATE SET ts=excluded.ts, model_count=excluded.model_count",
                (config, ts, model_count),
            )

    def training(self) -> dict[str, tuple[float | None, int | None]]:
        return {
            r[0]: (r[1], r[2]) for r in self.query("SELECT config, ts, model_count FROM curriculum_training")
        }

    def ingested(self, config: str) -> set[str]:
        return {r[0] for r in self.query("SELECT game_id FROM ingested_games WHERE config=?", (config,))}

    def add_ingested(self, config: str, game_ids: Sequence[str], limit: int) -> None:
        with self.write() as c:
            _add_ingested(c, config, game_ids, limit)

    # -- key/value state (triggers, health) -----------------------------------
    def put_state(self, table: str, config: str, state: str) -> None:
        _check_table(table)
        with self.write() as c:
            c.execute(
                f"INSERT INTO {table}(config, state) VALUES (?,?) "
                "ON CONFLICT(config) DO UPDATE SET state=excluded.state",
                (config, state),
            )

    def states(self, table: str) -> dict[str, str]:
        _check_table(table)
        return {r[0]: r[1] for r in self.query(f"SELECT config, state FROM {table}")}

    # -- promotion tests ------------------------------------------------------
    def count_games(self, config: str, candidate: str, game_ids: Sequence[str], state: str) -> set[str]:
        """Record ``game_ids`` as counted for the test and store its new ``state``, in one
        transaction; return the ids that were new (the caller adds only their results)."""
        with self.write() as c:
            new = set()
            for gid in game_ids:
                cur = c.execute(
                    "INSERT OR IGNORE INTO promotion_games(config, candidate, game_id) VALUES (?,?,?)",
                    (config, candidate, gid),
                )
                if cur.rowcount == 1:
                    new.add(gid)
            c.execute(
                "INSERT INTO promotion_state(config, state) VALUES (?,?) "
                "ON CONFLICT(config) DO UPDATE SET state=excluded.state",
                (config, state),
            )
        return new

    def counted_games(self, config: str, candidate: str) -> set[str]:
        rows = self.query(
            "SELECT game_id FROM promotion_games WHERE config=? AND candidate=?", (config, candidate)
        )
        return {r[0] for r in rows}

    def end_test(self, config: str, candidate: str) -> None:
        """Forget a closed test's counted games (its result is in the registry's stage history)."""
        with self.write() as c:
            c.execute("DELETE FROM promotion_games WHERE config=? AND candidate=?", (config, candidate))

    # -- alerts ---------------------------------------------------------------
    def upsert_alert(
        self, config: str, kind: str, subject: str, severity: str, message: str, since: float, external: bool
    ) -> None:
        with self.write() as c:
            c.execute(
                "INSERT INTO health_alerts(config, kind, subject, severity, message, since, external) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT(config, kind, subject) DO UPDATE SET "
                "severity=excluded.severity, message=excluded.message, since=excluded.since, "
                "external=excluded.external",
                (config, kind, subject, severity, message, since, int(external)),
            )

    def delete_alert(self, config: str, kind: str, subject: str) -> None:
        with self.write() as c:
            c.execute(
                "DELETE FROM health_alerts WHERE config=? AND kind=? AND subject=?", (config, kind, subject)
            )

    def alerts(self) -> list[tuple[str, str, str, str, str, float, bool]]:
        rows = self.query(
            "SELECT config, kind, subject, severity, message, since, external FROM health_alerts "
            "ORDER BY since, config, kind, subject"
        )
        return [(r[0], r[1], r[2], r[3], r[4], float(r[5]), bool(r[6])) for r in rows]


_TABLES = frozenset({"trigger_state", "health_configs", "promotion_state"})


def _check_table(table: str) -> None:
    if table not in _TABLES:
        raise ValueError(f"unknown state table {table!r}")


def _add_ingested(c: sqlite3.Connection, config: str, game_ids: Sequence[str], limit: int) -> None:
    row = c.execute("SELECT COALESCE(MAX(seq), 0) FROM ingested_games WHERE config=?", (config,)).fetchone()
    base = int(row[0])
    c.executemany(
        "INSERT OR IGNORE INTO ingested_games(config, game_id, seq) VALUES (?,?,?)",
        [(config, g, base + i + 1) for i, g in enumerate(game_ids)],
    )
    c.execute(
        "DELETE FROM ingested_games WHERE config=? AND seq <= ?", (config, base + len(game_ids) - limit)
    )
