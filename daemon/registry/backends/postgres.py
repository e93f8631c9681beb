"""The PostgreSQL record store (``postgresql://[user@]host[:port]/dbname``): the fleet's registry.

psycopg 3 through a ``psycopg_pool`` connection pool (threads of one process share it).
Each connection gets server-side ``statement_timeout``, ``lock_timeout`` and
``idle_in_transaction_session_timeout`` when the pool makes it, so a stalled client or a
lock held too long ends in an error rather than a hang; ``connect_timeout`` bounds connecting
and waiting for a pooled connection, and TCP keepalives plus ``tcp_user_timeout`` end a
connection whose server host vanished. (A server that is alive but hung - stopped, not gone -
is not detected client-side; nothing here cancels a statement from the client.) A pooled
connection is checked without a round trip: only when the server already sent something (the
EOF of a restarted server) is it probed, and a dead one is replaced.

The password comes from the caller (settings: ``RINGRIFT_DAEMON_REGISTRY__PASSWORD`` or
``registry.password_file``), never from a config file, and no message names it.

Fencing where the write lands: ``write(config)`` inserts the config's ``fences`` row if
absent and locks it ``FOR UPDATE``, so the token check, version allocation, model insert and
token raise of one registration are one transaction that excludes every other writer of
that config on every node. ``write(None)`` takes ``LOCK TABLE fences IN EXCLUSIVE MODE``,
which waits for and excludes every config's writer (each one holds ``ROW EXCLUSIVE`` on
``fences`` from its insert) while plain reads go on.
"""

from __future__ import annotations

import functools
import math
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from daemon.registry import migrations
from daemon.registry.backend import RecordTxn, Row, StoreOptions, redact_url
from daemon.registry.backends.sql import Cursor, SqlReads, SqlTxn
from daemon.registry.records import RegistryError

# pg_advisory_xact_lock key serialising schema migrations of one database ("RRMG").
_MIGRATION_LOCK = 0x52524D47


@functools.lru_cache(maxsize=256)
def _pg(sql: str) -> str:
    """The shared ``?`` statements in psycopg's ``%s`` style (none contains a literal ? or %)."""
    return sql.replace("?", "%s")


def _ms(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


def _first_lines(e: BaseException) -> str:
    return "; ".join(line.strip() for line in str(e).strip().splitlines() if line.strip()) or type(e).__name__


class PostgresRecordStore(SqlReads):
    """Thread-safe (the pool hands each caller its own connection)."""

    def __init__(self, url: str, options: StoreOptions | None = None) -> None:
        self.url = url
        self.name = redact_url(url)
        self.options = options or StoreOptions()
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._lock = threading.Lock()

    # -- connections ----------------------------------------------------------------
    def _conninfo(self) -> str:
        parts = urlsplit(self.url)
        url = urlunsplit(("postgresql", *parts[1:])) if parts.scheme != "postgresql" else self.url
        ct = max(1, math.ceil(self.options.connect_timeout))
        extra: dict[str, Any] = {
            "connect_timeout": ct,
            "application_name": "ringrift-daemon",
            "keepalives": 1,
            "keepalives_idle": ct,
            "keepalives_interval": max(1, ct // 2),
            "keepalives_count": 3,
            "tcp_user_timeout": 3 * ct * 1000,
        }
        if self.options.password is not None:
            extra["password"] = self.options.password
        return make_conninfo(url, **extra)

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        o = self.options
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false)",
            (_ms(o.statement_timeout), _ms(o.lock_timeout), _ms(o.idle_in_transaction_timeout)),
        )

    @staticmethod
    def _check(conn: psycopg.Connection[Any]) -> None:
        """The pool's check on handing out a connection; raising makes the pool replace it."""
        if conn.closed:
            raise psycopg.OperationalError("connection closed")
        poller = select.poll()  # not select(): no FD_SETSIZE limit
        poller.register(conn.fileno(), select.POLLIN)
        if poller.poll(0):  # EOF (server restarted or gone) or an async message: a real round trip
            conn.execute("")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Any failure of the server or the connection as one clear :class:`RegistryError`."""
        o = self.options
        try:
            yield
        except PoolTimeout:
            raise RegistryError(
                f"registry database {self.name}: unreachable ({what}): no connection within "
                f"{o.connect_timeout:g} s (server down, or all {o.pool_size} pooled connections busy)"
            ) from None
        except psycopg.errors.LockNotAvailable:
            raise RegistryError(
                f"registry database {self.name}: {what}: another writer held the lock longer than "
                f"lock_timeout ({o.lock_timeout:g} s)"
            ) from None
        except psycopg.errors.QueryCanceled:
            raise RegistryError(
                f"registry database {self.name}: {what}: statement_timeout ({o.statement_timeout:g} s)"
            ) from None
        except psycopg.OperationalError as e:
            raise RegistryError(f"registry database {self.name}: {what} failed: {_first_lines(e)}") from None
        except psycopg.Error as e:
            raise RegistryError(f"registry database {self.name}: {what}: {_first_lines(e)}") from None

    def open(self) -> None:
        """Connect once (migrating the schema on that connection), then start the pool."""
        with self._lock:
            if self._pool is not None:
                return
            with self._errors("open"):
                with psycopg.connect(self._conninfo(), autocommit=True, row_factory=dict_row) as conn:
                    self._configure(conn)
                    if not self.options.read_only:  # status and listings never change the schema
                        self._migrate(conn)
                pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                    self._conninfo(),
                    kwargs={"autocommit": True, "row_factory": dict_row},
                    min_size=1,
                    max_size=max(1, self.options.pool_size),
                    open=False,
                    configure=self._configure,
                    check=self._check,
                    timeout=self.options.connect_timeout,
                    name="ringrift-registry",
                )
                try:
                    pool.open(wait=True, timeout=self.options.connect_timeout)
                except BaseException:
                    pool.close()
                    raise
            self._pool = pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def _connections(self) -> ConnectionPool[psycopg.Connection[Any]]:
        if self._pool is None:
            self.open()
        assert self._pool is not None
        return self._pool

    # -- schema ---------------------------------------------------------------------
    @staticmethod
    def _version(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS present").fetchone()
        if not row or not row["present"]:
            return 0
        row = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").fetchone()
        return int(row["v"]) if row else 0

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        if not migrations.pending(self._version(conn), self.name):
            return
        with conn.transaction():
            # Nodes opening a new database together: one migrates, the others wait and find it done.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(migrations.MIGRATIONS_TABLE)
            at = datetime.now(UTC).isoformat()
            for step in migrations.pending(self._version(conn), self.name):
                for stmt in step.postgresql:
                    conn.execute(stmt)
                conn.execute(_pg(migrations.RECORD_MIGRATION), (step.version, step.description, at))

    def schema_version(self) -> int:
        with self._errors("read"), self._connections().connection() as conn:
            return self._version(conn)

    # -- statements -----------------------------------------------------------------
    @contextmanager
    def write(self, config: str | None) -> Iterator[RecordTxn]:
        with self._errors("write"), self._connections().connection() as conn, conn.transaction():
            if config is None:
                conn.execute("LOCK TABLE fences IN EXCLUSIVE MODE")
            else:
                conn.execute(
                    "INSERT INTO fences (config_key, last_token) VALUES (%s, 0) ON CONFLICT DO NOTHING",
                    (config,),
                )
                conn.execute("SELECT last_token FROM fences WHERE config_key = %s FOR UPDATE", (config,))

            def run(sql: str, args: tuple[Any, ...]) -> Cursor:
                return conn.execute(_pg(sql), args)

            yield SqlTxn(run)

    def _select(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        with self._errors("read"), self._connections().connection() as conn:
            return [dict(r) for r in conn.execute(_pg(sql), args).fetchall()]

    def _execute(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._errors("write"), self._connections().connection() as conn:
            return conn.execute(_pg(sql), args).rowcount
