"""The registry's record stores as a test parameter, and raw SQL for tampering tests.

``registry_url`` is None for the default SQLite file under ``registry_dir`` and a fresh
database on the session's real PostgreSQL (``postgres_url``) otherwise, so a test written
once runs against both backends.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import pytest

from daemon.registry import ModelRegistry
from daemon.registry.backend import sqlite_path

BACKENDS = ("sqlite", "postgresql")
RAW_ERRORS = (sqlite3.Error, psycopg.Error)


@pytest.fixture(params=BACKENDS)
def registry_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


def raw_execute(reg: ModelRegistry, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the registry's database behind its back (``?`` placeholders)."""
    if reg.url.startswith("sqlite"):
        db = sqlite3.connect(sqlite_path(reg.url), isolation_level=None)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()
    with psycopg.connect(reg.url, autocommit=True) as conn:
        cur = conn.execute(sql.replace("?", "%s"), args)
        return cur.fetchall() if cur.description else []
