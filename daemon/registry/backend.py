"""The registry's record store: one protocol, implementations picked by URL scheme.

:class:`~daemon.registry.registry.ModelRegistry` holds the rules (fencing, lineage,
stages, publication order); a record store holds the rows. Rows cross the protocol as
plain dicts whose JSON columns are still text and whose times are ISO-8601 strings, so
every backend stores exactly the same values.

A write transaction is opened for one config (``write(config)``): a backend must make
it exclusive for that config's version numbers, fencing token and production stage
(SQLite: ``BEGIN IMMEDIATE``, the whole file; PostgreSQL: the config's ``fences`` row
``FOR UPDATE``). ``write(None)`` excludes every writer (garbage collection).

Opening applies the schema migrations (:mod:`daemon.registry.migrations`). Every failure
of the database itself (unreachable, timed out, refused) is a :class:`RegistryError`
naming the database by :func:`redact_url` (never with a password).
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from daemon.registry.records import RegistryError

RECORD_STORES: dict[str, str] = {
    "sqlite": "daemon.registry.backends.sqlite:SqliteRecordStore",
    "postgresql": "daemon.registry.backends.postgres:PostgresRecordStore",
}

Row = dict[str, Any]
# (model_id, config, event, from_stage, to_stage, reason, at, fencing_token)
Event = tuple[str, str, str, str | None, str | None, str, str, int | None]


@dataclass(frozen=True)
class StoreOptions:
    """Connection settings for a record store; each backend uses the ones that apply to it."""

    password: str | None = None  # PostgreSQL; never taken from a config file
    pool_size: int = 4  # PostgreSQL connections per process
    connect_timeout: float = 5.0  # PostgreSQL: connect, and wait for a pooled connection
    statement_timeout: float = 30.0  # PostgreSQL, per statement (server side)
    lock_timeout: float = 30.0  # PostgreSQL: wait for a config's row lock (server side)
    idle_in_transaction_timeout: float = 120.0  # PostgreSQL: a writer that stalls mid-transaction
    busy_timeout: float = 30.0  # SQLite: wait for the file's write lock
    # Reads only (status, list, show): SQLite works on an in-memory copy and creates nothing;
    # PostgreSQL applies no migrations.
    read_only: bool = False


class RecordTxn(Protocol):
    """The statements a registration, promotion or GC needs, inside one write transaction."""

    def last_token(self, config: str) -> int | None: ...
    def raise_token(self, config: str, token: int) -> bool: ...
    def next_version(self, config: str) -> int: ...
    def model(self, model_id: str) -> Row | None: ...
    def production_id(self, config: str) -> str | None: ...
    def insert_model(self, row: Row) -> None: ...
    def set_stage(self, model_id: str, stage: str) -> None: ...
    def set_status(self, model_id: str, status: str) -> None: ...
    def add_event(self, event: Event) -> None: ...
    def digest_referenced(self, digest: str) -> bool: ...
    def digests(self) -> set[str]: ...


class RecordStore(Protocol):
    url: str

    def open(self) -> None: ...
    def close(self) -> None: ...
    def schema_version(self) -> int: ...
    def write(self, config: str | None) -> AbstractContextManager[RecordTxn]: ...
    def models(
        self,
        *,
        model_id: str | None = None,
        config: str | None = None,
        stage: str | None = None,
        status: str | None = None,
        newest_only: bool = False,
    ) -> list[Row]: ...
    def events(self, *, model_id: str | None = None, config: str | None = None) -> list[Row]: ...
    def last_token(self, config: str) -> int: ...
    def last_token_overall(self) -> int: ...
    def upsert_run(self, row: Row) -> bool: ...
    def runs(
        self,
        *,
        run_id: str | None = None,
        config: str | None = None,
        state: str | None = None,
        limit: int | None = None,
    ) -> list[Row]: ...


def default_url(registry_dir: Path) -> str:
    return f"sqlite:///{registry_dir.resolve() / 'registry.db'}"


def sqlite_path(url: str) -> Path:
    """``sqlite:///abs/path.db`` (or ``sqlite:////abs/path.db``) -> ``/abs/path.db``: always absolute."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise RegistryError(f"registry url {url!r}: expected sqlite:///PATH")
    path = parts.path[1:] if parts.path.startswith("//") else parts.path
    return Path(path)


def redact_url(url: str) -> str:
    """``url`` without a password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def open_record_store(url: str, options: StoreOptions | None = None) -> RecordStore:
    """The record store for ``url`` (not yet opened), from :data:`RECORD_STORES`."""
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    target = RECORD_STORES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in RECORD_STORES)
        raise RegistryError(f"registry url {redact_url(url)!r}: unsupported scheme (expected {known})")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    store: RecordStore = cls(url, options or StoreOptions())
    return store
