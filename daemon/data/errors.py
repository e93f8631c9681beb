"""Typed errors of the game-database reader: each names the file and the reason."""

from __future__ import annotations

import sqlite3
from pathlib import Path


class GameDBError(Exception):
    """A game database that cannot be read; names the file and the reason."""

    kind = "error"

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class DatabaseMissing(GameDBError):
    kind = "missing"


class NotADatabase(GameDBError):
    kind = "not_a_database"


class CorruptDatabase(GameDBError):
    kind = "corrupt"


class SchemaError(GameDBError):
    kind = "schema"


class DatabaseLocked(GameDBError):
    kind = "locked"


class NotARegularFile(GameDBError):
    """A FIFO, socket, device or directory: refused by ``stat``, never opened (opening can block)."""

    kind = "not_a_file"


class DatabaseReplaced(GameDBError):
    """The path holds another file than the snapshot read (renamed over, or a symlink swapped)."""

    kind = "replaced"


def translate(path: Path, e: sqlite3.Error) -> GameDBError:
    msg = str(e)
    low = msg.lower()
    if "locked" in low or "busy" in low:
        return DatabaseLocked(path, f"database is locked ({msg})")
    if "not a database" in low or "file is encrypted" in low:
        return NotADatabase(path, "not an SQLite database")
    if "malformed" in low or "corrupt" in low or "disk i/o" in low:
        return CorruptDatabase(path, f"database is corrupt ({msg})")
    if "no such table" in low or "no such column" in low:
        return SchemaError(path, f"unexpected schema ({msg})")
    if "unable to open" in low:
        return DatabaseMissing(path, f"cannot open database ({msg})")
    return CorruptDatabase(path, msg)
