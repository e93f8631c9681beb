"""Opening a game database: never a special file, always the file the caller means.

Every connection to a game database (poll, export, export workers, ``check``) comes from
:func:`open_game_db`:

* ``stat`` first: anything but a regular file (FIFO, socket, device, directory) is refused
  before any ``open`` (opening a FIFO blocks until a writer appears, forever);
* read-only URI (``mode=ro``), a busy timeout, ``query_only``;
* the schema checked (tables, required columns) and what it has recorded;
* the path's identity (``st_dev``, ``st_ino``) the same before and after SQLite opened it,
  so the connection holds the file that was checked; with ``expect`` it must be that file
  (the snapshot's), else :class:`DatabaseReplaced`. SQLite opens by name (its ``-wal`` and
  ``-shm`` sit beside the name) and a descriptor cannot be handed to a pool worker
  portably, so the file is pinned by identity;
* text is fetched as ``bytes``: an invalid UTF-8 byte in a row is data to skip, never an
  exception that fails the whole read.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from daemon.data.errors import (
    DatabaseMissing,
    DatabaseReplaced,
    GameDBError,
    NotARegularFile,
    SchemaError,
    translate,
)
from daemon.data.orphans import leads_an_index
from daemon.data.usable import text

REQUIRED_GAME_COLUMNS = ("game_id", "board_type", "num_players", "game_status", "winner")
REQUIRED_MOVE_COLUMNS = ("game_id", "move_number", "player", "move_json")
SIDECARS = ("-wal", "-shm", "-journal")
HOT_JOURNAL = ("-journal",)
NEWEST_SCHEMA = 18  # the newest upstream schema this reader knows (DESIGN 3)
Identity = tuple[int, int]  # (st_dev, st_ino)

_SPECIAL = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


@dataclass(frozen=True)
class Schema:
    """What one database file has: tables, columns, schema version, and warnings about it."""

    tables: frozenset[str]
    game_cols: frozenset[str]
    move_cols: frozenset[str]
    player_cols: frozenset[str]
    version: int | None
    moves_by_game: bool  # an index leads with game_moves.game_id
    warnings: tuple[str, ...] = ()


def not_regular(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is no database file, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    for test, name in _SPECIAL:
        if test(mode):
            return f"not a regular file: {name}"
    return "not a regular file"


def stat_regular(path: Path) -> os.stat_result:
    """``os.stat`` of a game database; raises unless it is a regular file (never opens it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DatabaseMissing(path, "file not found") from None
    except OSError as e:
        raise DatabaseMissing(path, f"cannot stat: {e.strerror}") from None
    problem = not_regular(st.st_mode)
    if problem is not None:
        raise NotARegularFile(path, problem)
    sidecar_problem(path)
    return st


def sidecar_problem(path: Path, suffixes: tuple[str, ...] = SIDECARS) -> None:
    """Raise when a file SQLite opens beside the database (``-wal``, ``-shm``, ``-journal``) is special."""
    for suffix in suffixes:
        name = f"{path}{suffix}"
        if not os.access(name, os.F_OK):  # absent, the usual case: no exception raised and caught
            continue
        try:
            mode = os.stat(name).st_mode
        except OSError:  # gone meanwhile, or unreadable: SQLite reports what it finds
            continue
        problem = not_regular(mode)
        if problem is not None:
            raise NotARegularFile(path, f"its {suffix[1:]} file: {problem}")


def identity_of(st: os.stat_result) -> Identity:
    return st.st_dev, st.st_ino


def open_game_db(
    path: Path,
    *,
    busy_timeout: float,
    expect: Identity | None = None,
    check_same_thread: bool = True,
) -> tuple[sqlite3.Connection, Schema, Identity]:
    """A read-only connection to ``path`` (text as bytes), its schema and the file's identity.

    Raises :class:`GameDBError`: :class:`NotARegularFile` for a special file,
    :class:`DatabaseReplaced` when ``expect`` is given and the path holds another file.
    """
    for _ in range(3):  # the path replaced while opening: once more (unless a file is expected)
        ident = identity_of(stat_regular(path))
        if expect is not None and ident != expect:
            raise DatabaseReplaced(
                path, f"file replaced since the snapshot (inode {expect[1]}, now {ident[1]}); not read"
            )
        uri = f"file:{quote(str(path.absolute()))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, check_same_thread=check_same_thread)
        except sqlite3.Error as e:
            raise translate(path, e) from None
        try:
            conn.text_factory = bytes
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            conn.execute("PRAGMA query_only=1")
            schema = read_schema(conn, path)
            try:
                after: Identity | None = identity_of(os.stat(path))
            except OSError:
                after = None
        except GameDBError:
            conn.close()
            raise
        except sqlite3.Error as e:
            conn.close()
            raise translate(path, e) from None
        if after == ident:
            return conn, schema, ident
        conn.close()
        if expect is not None:
            raise DatabaseReplaced(path, "file replaced while it was being opened; not read")
    raise DatabaseReplaced(path, "file replaced again each time it was opened")


def _names(conn: sqlite3.Connection, sql: str, col: int) -> frozenset[str]:
    return frozenset(text(r[col]) or "" for r in conn.execute(sql))


def read_schema(conn: sqlite3.Connection, path: Path) -> Schema:
    tables = _names(conn, "SELECT name FROM sqlite_master WHERE type='table'", 0)
    if "games" not in tables or "game_moves" not in tables:
        raise SchemaError(path, "not a GameReplayDB: tables 'games' and 'game_moves' are required")
    gcols = _names(conn, "PRAGMA table_info(games)", 1)
    mcols = _names(conn, "PRAGMA table_info(game_moves)", 1)
    pcols = _names(conn, "PRAGMA table_info(game_players)", 1) if "game_players" in tables else frozenset()
    missing = [c for c in REQUIRED_GAME_COLUMNS if c not in gcols]
    missing += [f"game_moves.{c}" for c in REQUIRED_MOVE_COLUMNS if c not in mcols]
    if missing:
        raise SchemaError(path, f"missing columns: {', '.join(missing)}")
    version = _schema_version(conn) if "schema_metadata" in tables else None
    warnings = []
    if version is not None and version > NEWEST_SCHEMA:
        warnings.append(
            f"schema_version {version} is newer than this reader knows (v{NEWEST_SCHEMA});"
            " reading the columns it has"
        )
    return Schema(
        tables=tables,
        game_cols=gcols,
        move_cols=mcols,
        player_cols=pcols,
        version=version,
        moves_by_game=leads_an_index(conn, "game_moves", "game_id"),
        warnings=tuple(warnings),
    )


def _schema_version(conn: sqlite3.Connection) -> int | None:
    try:
        row = conn.execute("SELECT value FROM schema_metadata WHERE key='schema_version'").fetchone()
    except sqlite3.OperationalError:  # a schema_metadata of another shape: no version
        return None
    value = (text(row[0]) or "").strip() if row else ""
    return int(value) if value.isascii() and value.isdigit() else None
