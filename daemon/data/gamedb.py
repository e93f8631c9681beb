"""Read side of the GameReplayDB (SQLite files owned by the self-play writers).

Read-only (``mode=ro``), never takes a write lock, works while a writer appends
in WAL mode, and adapts to the schema version (v6 .. v18) by detecting columns.

:meth:`GameDB.refresh` keeps per-config counts incrementally. Its cost grows
with the rows that are new since the last refresh, not with the database:

* nothing changed: one ``stat`` and ``PRAGMA data_version`` (which only moves
  when another connection commits);
* new games: ``rowid > watermark``;
* status updates (``active`` -> ``completed``): only the rows still pending are
  re-read;
* orphan moves: only move rows past the move watermark; when they all belong to the
  games rows new in the same pass (one count along the game_id index), none is read;
* pending games: the newest and a rotating slice of the older ones, a bounded batch;
* the connection (its schema and page cache) is kept while the file identity holds:
  a main file written after another connection's commit (a checkpoint) is SQLite's
  to revalidate; written with no commit seen, it is reopened;
* a replaced file: a new inode, or the watermark row no longer holding the same
  game, triggers one full rescan.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import structlog

from daemon.data.errors import (
    CorruptDatabase,
    DatabaseLocked,
    DatabaseMissing,
    DatabaseReplaced,
    GameDBError,
    NotADatabase,
    NotARegularFile,
    SchemaError,
    translate,
)
from daemon.data.games import (  # re-exported: callers import the game records from here
    USABLE_STATUSES,
    Game,
    Move,
    Player,
    Pos,
    game_keys,
    parse_move,
    stream_games,
)
from daemon.data.opening import (
    HOT_JOURNAL,
    REQUIRED_GAME_COLUMNS,
    REQUIRED_MOVE_COLUMNS,
    Identity,
    Schema,
    not_regular,
    open_game_db,
    sidecar_problem,
)
from daemon.data.orphans import ORPHANS_BY_INDEX, new_orphans, orphan_config
from daemon.data.snapshot import ConfigSnapshot, SkipCounts, SourceSnapshot
from daemon.data.usable import PENDING_STATUSES, classify, config_of, text

log = structlog.get_logger(__name__)

__all__ = [
    "REQUIRED_GAME_COLUMNS",
    "REQUIRED_MOVE_COLUMNS",
    "USABLE_STATUSES",
    "ConfigSnapshot",
    "CorruptDatabase",
    "DatabaseLocked",
    "DatabaseMissing",
    "DatabaseReplaced",
    "Game",
    "GameDB",
    "GameDBError",
    "Move",
    "NotADatabase",
    "NotARegularFile",
    "Player",
    "Pos",
    "SchemaError",
    "SkipCounts",
    "SourceSnapshot",
    "parse_move",
]

_CHUNK = 1000
# Pending (active) games: the newest are rechecked on every refresh; older ones,
# usually stuck games of a crashed writer, in a rotating slice, so a refresh
# stays bounded however many of them pile up. Each is rechecked at least once
# every ceil(old / _PENDING_SLICE) refreshes.
# Bounded so a refresh after new games stays a few milliseconds on a 1M-game file (each
# recheck is a random page read; a writer's commit empties the reader's page cache).
_PENDING_RECENT = 200
_PENDING_SLICE = 200


class GameDB:
    """One game database. Not thread-safe by design; an internal lock serialises callers."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._schema: Schema | None = None  # set on open
        # Usable counts at the last successful refresh; survives a reset, so a file
        # replaced by a smaller one reports negative ``new_games``.
        self._prev_usable: dict[str, int] = {}
        self._reset()
        self.snapshot: SourceSnapshot | None = None

    def _reset(self) -> None:
        self._identity: Identity | None = None
        self._stat: tuple[int, int] | None = None
        self._data_version: int | None = None
        self._watermark = 0
        # game_id values are kept as read (bytes, or another storage class): compared, never decoded.
        self._watermark_gid: object = None
        self._moves_watermark = 0
        self._usable: dict[str, int] = {}
        self._config_max: dict[str, tuple[int, object]] = {}
        self._skips: dict[str, SkipCounts] = {}
        self._source_skips = SkipCounts()
        # rowid -> config, in ascending rowid order (insertion order).
        self._pending: dict[int, str | None] = {}
        self._pending_cursor = 0
        self._orphans: dict[object, str | None] = {}
        self._status_updates = 0

    # -- connection -------------------------------------------------------
    def open(self) -> None:
        """Open read-only and check the schema (raises :class:`GameDBError`)."""
        with self._lock:
            previous = self._identity
            self._open_locked()
            if previous is not None and previous != self._identity:  # another file now: count afresh
                identity = self._identity
                self._reset()
                self._identity = identity

    def _open_locked(self) -> None:
        self._close_locked()
        conn, schema, identity = open_game_db(
            self.path, busy_timeout=self.busy_timeout, check_same_thread=False
        )
        self._conn, self._schema, self._identity = conn, schema, identity
        # data_version is per connection: never compare values across connections.
        self._data_version = None

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- refresh ------------------------------------------------------------
    def refresh(self) -> SourceSnapshot:
        """Bring the counts up to date; raises :class:`GameDBError` (the source is then unhealthy)."""
        with self._lock:
            try:
                return self._refresh_locked()
            except sqlite3.Error as e:
                self._close_locked()
                raise translate(self.path, e) from None

    def poll(self) -> SourceSnapshot:
        """Like :meth:`refresh` but never raises: an unreadable file gives ``ok=False``."""
        try:
            return self.refresh()
        except GameDBError as e:
            return self._failed(str(e), e.kind)
        except Exception as e:  # a reader bug must not stop the poll of the other sources
            log.error("source.read_failed", source=str(self.path), error=f"{type(e).__name__}: {e}")
            with self._lock:
                self._close_locked()
                self._reset()
            return self._failed(f"{self.path}: cannot read ({type(e).__name__}: {e})", "error")

    def _failed(self, error: str, kind: str) -> SourceSnapshot:
        prev = self.snapshot
        self.snapshot = SourceSnapshot.failed(
            str(self.path), error, kind, prev.schema_version if prev else None
        )
        return self.snapshot

    def _refresh_locked(self) -> SourceSnapshot:
        try:
            st = os.stat(self.path)  # follows a symlink: the identity is the target's
        except FileNotFoundError:
            seen = self._identity is not None
            self._close_locked()
            self._reset()
            raise DatabaseMissing(self.path, "file went away" if seen else "file not found") from None
        except OSError as e:
            self._close_locked()
            raise DatabaseMissing(self.path, f"cannot stat: {e.strerror}") from None
        problem = not_regular(st.st_mode)
        if problem is not None:  # a FIFO, socket, device or directory now: never opened
            self._close_locked()
            self._reset()
            raise NotARegularFile(self.path, problem)
        try:
            # An open connection holds its -wal and -shm; each read transaction of a rollback-mode
            # file may open a hot -journal. (A new connection checks all three.)
            sidecar_problem(self.path, HOT_JOURNAL)
        except NotARegularFile:
            self._close_locked()
            raise
        replaced = False
        if self._identity is not None and self._identity != (st.st_dev, st.st_ino):
            replaced = True  # a new inode: another file was moved into place
            self._close_locked()
            self._reset()
        stat_key = (st.st_size, st.st_mtime_ns)
        dv = None
        if self._conn is not None and self._stat is not None and stat_key != self._stat:
            # The main file was written. After another connection's commit (a checkpoint, a
            # rollback-mode commit) SQLite itself revalidates the page cache: keep the
            # connection. Written with no commit seen (a copy over it in place, which a WAL
            # reader's page cache would not notice): reconnect.
            try:
                dv = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error:  # its cached view no longer fits the file: other bytes
                dv = self._data_version
            if dv == self._data_version:
                self._close_locked()
        if self._conn is None:
            # First open, a new file, or reconnecting (counts kept: the content check
            # below catches a file rewritten in the meantime).
            self._open_locked()
            dv = None
        conn = self._conn
        assert conn is not None
        if dv is None:
            dv = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if (
            dv == self._data_version
            and stat_key == self._stat
            and self.snapshot is not None
            and self.snapshot.ok
        ):
            if self.snapshot.changed:
                self.snapshot = self._build(replaced=False, changed=False)
            return self.snapshot
        conn.execute("BEGIN")  # one read transaction: a consistent view for all queries below
        try:
            if self._watermark and self._content_replaced(conn):
                replaced = True  # same inode, other content (copied over in place)
                identity = self._identity
                self._reset()
                self._identity = identity
            games_from = self._watermark
            self._scan_new_games(conn)
            self._recheck_pending(conn)
            self._scan_orphans(conn, games_from)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
        # Only after a complete pass: a failed pass is redone on the next refresh.
        self._data_version, self._stat = dv, stat_key
        self.snapshot = self._build(replaced=replaced, changed=True)
        self._prev_usable = dict(self._usable)
        return self.snapshot

    def _content_replaced(self, conn: sqlite3.Connection) -> bool:
        row = conn.execute("SELECT game_id FROM games WHERE rowid=?", (self._watermark,)).fetchone()
        return row is None or row[0] != self._watermark_gid

    def _bump(self, key: str | None, kind: str, delta: int) -> None:
        if kind == "usable":
            assert key is not None
            self._usable[key] = self._usable.get(key, 0) + delta
            return
        skips = self._skips.setdefault(key, SkipCounts()) if key else self._source_skips
        setattr(skips, kind, getattr(skips, kind) + delta)

    def _scan_new_games(self, conn: sqlite3.Connection) -> None:
        cur = conn.execute(
            "SELECT rowid, game_id, board_type, num_players, game_status, winner FROM games"
            " WHERE rowid > ? ORDER BY rowid",
            (self._watermark,),
        )
        orphans = self._orphans
        while rows := cur.fetchmany(_CHUNK):
            for rowid, gid, board, players, status, winner in rows:
                key = config_of(board, players)
                kind = classify(status, winner) if key else "other"
                self._bump(key, kind, 1)
                if kind == "active":
                    self._pending[rowid] = key
                if key:
                    self._config_max[key] = (rowid, gid)
                if orphans and gid in orphans:  # its games row came after its moves
                    self._bump(orphans.pop(gid), "orphan", -1)
                self._watermark, self._watermark_gid = rowid, gid

    def _pending_batch(self) -> list[int]:
        """The pending rowids to recheck now: all recent ones plus a rotating slice of older ones."""
        ids = list(self._pending)
        if len(ids) <= _PENDING_RECENT + _PENDING_SLICE:
            return ids
        old, recent = ids[:-_PENDING_RECENT], ids[-_PENDING_RECENT:]
        start = bisect.bisect_right(old, self._pending_cursor)
        batch = old[start : start + _PENDING_SLICE]
        if len(batch) < _PENDING_SLICE:  # wrap around
            batch += old[: min(start, _PENDING_SLICE - len(batch))]
        self._pending_cursor = batch[-1]
        return batch + recent

    def _recheck_pending(self, conn: sqlite3.Connection) -> None:
        ids = self._pending_batch()
        pending = ",".join(f"'{s}'" for s in sorted(PENDING_STATUSES))
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            # Usually nothing changed: one aggregate row instead of a row per pending game.
            found, still = conn.execute(
                f"SELECT count(*), total(lower(game_status) IN ({pending}))"
                f" FROM games WHERE rowid IN ({marks})",
                chunk,
            ).fetchone()
            if found == len(chunk) and int(still) == found:
                continue
            seen = set()
            for rowid, status, winner in conn.execute(
                f"SELECT rowid, game_status, winner FROM games WHERE rowid IN ({marks})", chunk
            ):
                seen.add(rowid)
                kind = classify(status, winner)
                if kind != "active":
                    key = self._pending.pop(rowid)
                    self._bump(key, "active", -1)
                    self._bump(key, kind, 1)
                    self._status_updates += 1
            for rowid in set(chunk) - seen:  # deleted while pending
                self._bump(self._pending.pop(rowid), "active", -1)

    def _scan_orphans(self, conn: sqlite3.Connection, games_from: int) -> None:
        """Games with moves but no ``games`` row, among the move rows added since the last pass."""
        top = conn.execute("SELECT max(rowid) FROM game_moves").fetchone()[0] or 0
        if top <= self._moves_watermark:
            if top < self._moves_watermark:  # move rows deleted from the tail
                self._moves_watermark = top
            return
        if self._moves_watermark == 0 and self._schema is not None and self._schema.moves_by_game:
            # First pass: hop from game to game along the game_id index (one seek per
            # game) instead of reading every move row; the transaction bounds it at `top`.
            rows = conn.execute(ORPHANS_BY_INDEX)
            new_ids = [gid for (gid,) in rows]
        else:  # only the new rowid range, hopping game to game when the index allows
            assert self._schema is not None
            new_ids = new_orphans(
                conn, (self._moves_watermark, top), (games_from, self._watermark), self._schema.moves_by_game
            )
        assert self._schema is not None
        for gid in new_ids:
            if gid not in self._orphans:
                key = orphan_config(conn, self._schema.tables, gid)
                self._orphans[gid] = key
                self._bump(key, "orphan", 1)
        self._moves_watermark = top

    def _build(self, *, replaced: bool, changed: bool) -> SourceSnapshot:
        configs: dict[str, ConfigSnapshot] = {}
        keys = set(self._usable) | set(self._skips) | set(self._config_max)
        for key in sorted(keys):
            usable = self._usable.get(key, 0)
            wm, gid = self._config_max.get(key, (0, ""))
            sig_src = f"{self._identity}|{wm}|{text(gid) or ''}|{usable}"
            configs[key] = ConfigSnapshot(
                config_key=key,
                usable_games=usable,
                watermark=wm,
                new_games=usable - self._prev_usable.get(key, 0) if changed else 0,
                skipped=SkipCounts(**self._skips.get(key, SkipCounts()).as_dict()),
                signature=hashlib.sha256(sig_src.encode()).hexdigest()[:32],
            )
        return SourceSnapshot(
            path=str(self.path),
            ok=True,
            error=None,
            schema_version=self._schema.version if self._schema else None,
            identity=self._identity,
            max_rowid=self._watermark,
            status_updates=self._status_updates,
            replaced=replaced,
            changed=changed,
            configs=configs,
            orphans=tuple(sorted(text(g) or "" for g in self._orphans)),
            warnings=self._schema.warnings if self._schema else (),
        )

    # -- streaming ----------------------------------------------------------
    def iter_games(
        self,
        config_key: str,
        *,
        upto_rowid: int | None = None,
        newest_first: bool = True,
        limit: int | None = None,
        min_rowid: int = 0,
        sources: tuple[str, ...] | None = None,
        rowids: Sequence[int] | None = None,
        identity: Identity | None = None,
    ) -> Iterator[Game]:
        """Usable games of ``config_key`` with ``rowid <= upto_rowid``, one at a time.

        ``rowids`` restricts them to those rows. ``identity`` (a snapshot's): read only that
        file, else :class:`DatabaseReplaced`. Uses its own connection so streaming never
        blocks :meth:`refresh`.
        """
        conn, schema = self._reader(identity)
        try:
            yield from stream_games(
                conn, schema, config_key, upto_rowid, newest_first, limit, min_rowid, sources, rowids
            )
        except sqlite3.Error as e:
            raise translate(self.path, e) from None
        finally:
            conn.close()

    def iter_game_keys(
        self,
        config_key: str,
        *,
        upto_rowid: int | None = None,
        newest_first: bool = True,
        limit: int | None = None,
        identity: Identity | None = None,
    ) -> Iterator[tuple[str, int]]:
        """``(created_at or "", rowid)`` of the games :meth:`iter_games` yields, in order; reads no moves."""
        conn, schema = self._reader(identity)
        try:
            yield from game_keys(conn, schema, config_key, upto_rowid, newest_first, limit)
        except sqlite3.Error as e:
            raise translate(self.path, e) from None
        finally:
            conn.close()

    def _reader(self, identity: Identity | None) -> tuple[sqlite3.Connection, Schema]:
        conn, schema, _ = open_game_db(self.path, busy_timeout=self.busy_timeout, expect=identity)
        return conn, schema
