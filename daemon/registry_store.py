"""Registry storage: the SQLite schema and connection, and content-addressed model files
(``objects/sha256/<hex>.pt``) published by temp file + fsync + rename.

A temp file (``.tmp-<pid>-<uuid>.pt``) is flock-ed by its writer for its whole life, so a sweeper
can tell a dead writer's leftover (lock free) from one in progress (lock held) without any clock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from daemon.registry_model import RegistryError, file_sha256

TMP_PREFIX = ".tmp-"
SCHEMA_VERSION = 1
_CHUNK = 1 << 20

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


def utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def check_token(token: int | None) -> None:
    if token is not None and (isinstance(token, bool) or not isinstance(token, int) or token < 0):
        raise RegistryError(f"fencing_token must be a non-negative int or None, got {token!r}")


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    # BEGIN IMMEDIATE takes the write lock up front: a deferred read-then-write in WAL mode would
    # fail with SQLITE_BUSY_SNAPSHOT regardless of busy_timeout.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def connect_db(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """Autocommit connection (explicit transactions only), WAL, busy timeout, schema ensured."""
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Only a fresh file takes the write lock here, so opening never waits for a writer.
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            with immediate(conn):
                for stmt in _SCHEMA:
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.close()
        raise
    return conn


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Staged:
    """A fully written, fsynced temp copy; ``fd`` holds its flock until :meth:`ObjectStore.release`."""

    path: Path
    fd: int
    digest: str
    size: int


class ObjectStore:
    def __init__(self, objects_dir: Path) -> None:
        self.dir = objects_dir

    def path_for(self, digest: str) -> Path:
        return self.dir / f"{digest}.pt"

    def stage(self, src: Path) -> Staged:
        """Copy ``src`` to a locked temp file in the objects dir, hashing as it goes, and fsync it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = self.dir / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.pt"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A sweeper may have unlinked the file between create and flock: then start over.
            try:
                if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            h = hashlib.sha256()
            size = 0
            with src.open("rb") as f, os.fdopen(fd, "wb", closefd=False) as out:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(fd)
            if size == 0:
                raise RegistryError(f"model file {src}: empty")
        except BaseException:
            tmp.unlink(missing_ok=True)
            os.close(fd)
            raise
        return Staged(tmp, fd, h.hexdigest(), size)

    def publish(self, staged: Staged) -> bool:
        """Rename the temp file to its digest name and fsync the dir. False if already stored (dedup).

        Callers hold the registry's write lock, so no GC runs concurrently."""
        final = self.path_for(staged.digest)
        try:
            present = final.stat().st_size == staged.size
        except FileNotFoundError:
            present = False
        if present:  # same digest, same bytes: keep the stored copy
            staged.path.unlink()
            return False
        os.replace(staged.path, final)
        fsync_dir(self.dir)
        return True

    def release(self, staged: Staged) -> None:
        """Drop the temp file if still there (failure paths) and release its lock."""
        try:
            staged.path.unlink(missing_ok=True)
        finally:
            os.close(staged.fd)

    def remove(self, digest: str) -> None:
        self.path_for(digest).unlink(missing_ok=True)

    def objects(self) -> Iterator[Path]:
        for p in sorted(self.dir.glob("*.pt")):
            if not p.name.startswith(TMP_PREFIX):
                yield p

    def check(self, digest: str, size: int) -> str | None:
        """None if the stored file matches, else ``missing`` / ``size_mismatch`` / ``digest_mismatch``."""
        p = self.path_for(digest)
        try:
            if p.stat().st_size != size:
                return "size_mismatch"
        except FileNotFoundError:
            return "missing"
        return None if file_sha256(p) == digest else "digest_mismatch"

    def sweep_temp(self) -> list[str]:
        """Remove temp files whose writer is gone (their flock is free)."""
        removed: list[str] = []
        for p in sorted(self.dir.glob(f"{TMP_PREFIX}*")):
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                p.unlink(missing_ok=True)
                removed.append(str(p))
            except BlockingIOError:
                pass  # a live writer holds it
            finally:
                os.close(fd)
        return removed
