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
* orphan moves: only move rows past the move watermark, plus the few candidates
  still unresolved;
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from daemon.keys import PLAYER_COUNTS, board_aliases, make_config_key, parse_config_key
from daemon.replay import (  # re-exported: callers import the game records from here
    USABLE_STATUSES,
    Game,
    Move,
    Player,
    Pos,
    game_keys,
    parse_move,
    stream_games,
)

__all__ = [
    "USABLE_STATUSES",
    "ConfigSnapshot",
    "CorruptDatabase",
    "DatabaseLocked",
    "DatabaseMissing",
    "Game",
    "GameDB",
    "GameDBError",
    "Move",
    "NotADatabase",
    "Player",
    "Pos",
    "SchemaError",
    "SkipCounts",
    "SourceSnapshot",
    "parse_move",
]

PENDING_STATUSES = frozenset({"active", "in_progress", "paused", "waiting"})
REQUIRED_GAME_COLUMNS = ("game_id", "board_type", "num_players", "game_status", "winner")
REQUIRED_MOVE_COLUMNS = ("game_id", "move_number", "player", "move_json")
_CHUNK = 1000
# Pending (active) games: the newest are rechecked on every refresh; older ones,
# usually stuck games of a crashed writer, in a rotating slice, so a refresh
# stays bounded however many of them pile up. Each is rechecked at least once
# every ceil(old / _PENDING_SLICE) refreshes.
_PENDING_RECENT = 500
_PENDING_SLICE = 1000


# Distinct game_ids of game_moves without a games row, as a loose index scan.
_ORPHANS_BY_INDEX = (
    "WITH RECURSIVE ids(gid) AS (SELECT min(game_id) FROM game_moves UNION ALL"
    " SELECT (SELECT m.game_id FROM game_moves m WHERE m.game_id > ids.gid ORDER BY m.game_id LIMIT 1)"
    " FROM ids WHERE ids.gid IS NOT NULL)"
    " SELECT gid FROM ids WHERE gid IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM games g WHERE g.game_id = ids.gid)"
)


def _leads_an_index(conn: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether some index of ``table`` starts with ``column`` (so seeks by it are cheap)."""
    for row in conn.execute(f"PRAGMA index_list({table})"):
        quoted = '"' + str(row[1]).replace('"', '""') + '"'
        cols = conn.execute(f"PRAGMA index_info({quoted})").fetchall()
        if cols and cols[0][2] == column:
            return True
    return False


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


@dataclass
class SkipCounts:
    orphan: int = 0
    active: int = 0
    abandoned: int = 0
    no_winner: int = 0
    other: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("orphan", "active", "abandoned", "no_winner", "other")}


@dataclass(frozen=True)
class ConfigSnapshot:
    config_key: str
    usable_games: int
    # Highest games.rowid holding a row of this config (any status).
    watermark: int
    # Usable games gained since the previous refresh (negative if the file shrank).
    new_games: int
    skipped: SkipCounts
    # Changes exactly when this config's rows change: for the export cache.
    signature: str


@dataclass(frozen=True)
class SourceSnapshot:
    path: str
    ok: bool
    error: str | None
    schema_version: int | None
    identity: tuple[int, int] | None
    max_rowid: int
    status_updates: int
    replaced: bool
    changed: bool
    configs: dict[str, ConfigSnapshot]
    orphans: tuple[str, ...]
    error_kind: str | None = None


_KEY_CACHE: dict[tuple[str, int], str | None] = {}


def _config_of(board: Any, players: Any) -> str | None:
    try:
        if not isinstance(board, str) or int(players) not in PLAYER_COUNTS:
            return None
        n = int(players)
    except (ValueError, TypeError):
        return None
    # Memoised: this runs for every new row, and there are only a few distinct values.
    ck = (board, n)
    if ck not in _KEY_CACHE:
        try:
            _KEY_CACHE[ck] = make_config_key(board, n) if len(_KEY_CACHE) < 4096 else None
        except ValueError:
            _KEY_CACHE[ck] = None
    return _KEY_CACHE[ck]


def _classify(status: Any, winner: Any) -> str:
    s = str(status).lower() if status is not None else ""
    if s in USABLE_STATUSES:
        return "usable" if winner is not None else "no_winner"
    if s in PENDING_STATUSES:
        return "active"
    if s == "abandoned":
        return "abandoned"
    return "other"


def _translate(path: Path, e: sqlite3.Error) -> GameDBError:
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


class GameDB:
    """One game database. Not thread-safe by design; an internal lock serialises callers."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._moves_by_game = False  # set on open: an index leads with game_moves.game_id
        # Usable counts at the last successful refresh; survives a reset, so a file
        # replaced by a smaller one reports negative ``new_games``.
        self._prev_usable: dict[str, int] = {}
        self._reset()
        self.snapshot: SourceSnapshot | None = None

    def _reset(self) -> None:
        self._identity: tuple[int, int] | None = None
        self._stat: tuple[int, int] | None = None
        self._data_version: int | None = None
        self._schema_version: int | None = None
        self._game_cols: frozenset[str] = frozenset()
        self._watermark = 0
        self._watermark_gid: str | None = None
        self._moves_watermark = 0
        self._usable: dict[str, int] = {}
        self._config_max: dict[str, tuple[int, str]] = {}
        self._skips: dict[str, SkipCounts] = {}
        self._source_skips = SkipCounts()
        # rowid -> config, in ascending rowid order (insertion order).
        self._pending: dict[int, str | None] = {}
        self._pending_cursor = 0
        self._orphans: dict[str, str | None] = {}
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
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise DatabaseMissing(self.path, "file not found") from None
        except OSError as e:
            raise DatabaseMissing(self.path, f"cannot stat: {e.strerror}") from None
        uri = f"file:{quote(str(self.path.absolute()))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, check_same_thread=False)
        except sqlite3.Error as e:
            raise _translate(self.path, e) from None
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA query_only=1")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "games" not in tables or "game_moves" not in tables:
                raise SchemaError(
                    self.path, "not a GameReplayDB: tables 'games' and 'game_moves' are required"
                )
            gcols = {r[1] for r in conn.execute("PRAGMA table_info(games)")}
            mcols = {r[1] for r in conn.execute("PRAGMA table_info(game_moves)")}
            missing = [c for c in REQUIRED_GAME_COLUMNS if c not in gcols]
            missing += [f"game_moves.{c}" for c in REQUIRED_MOVE_COLUMNS if c not in mcols]
            if missing:
                raise SchemaError(self.path, f"missing columns: {', '.join(missing)}")
            version = None
            if "schema_metadata" in tables:
                row = conn.execute("SELECT value FROM schema_metadata WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row and str(row[0]).isdigit() else None
            self._tables = frozenset(tables)
            self._game_cols = frozenset(gcols)
            self._move_cols = frozenset(mcols)
            self._moves_by_game = _leads_an_index(conn, "game_moves", "game_id")
            self._schema_version = version
        except GameDBError:
            conn.close()
            raise
        except sqlite3.Error as e:
            conn.close()
            raise _translate(self.path, e) from None
        self._conn = conn
        self._identity = (st.st_dev, st.st_ino)
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
                raise _translate(self.path, e) from None

    def poll(self) -> SourceSnapshot:
        """Like :meth:`refresh` but never raises: an unreadable file gives ``ok=False``."""
        try:
            return self.refresh()
        except GameDBError as e:
            prev = self.snapshot
            snap = SourceSnapshot(
                path=str(self.path),
                ok=False,
                error=str(e),
                error_kind=e.kind,
                schema_version=prev.schema_version if prev else None,
                identity=None,
                max_rowid=0,
                status_updates=0,
                replaced=False,
                changed=True,
                configs={},
                orphans=(),
            )
            self.snapshot = snap
            return snap

    def _refresh_locked(self) -> SourceSnapshot:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            seen = self._identity is not None
            self._close_locked()
            self._reset()
            raise DatabaseMissing(self.path, "file went away" if seen else "file not found") from None
        except OSError as e:
            self._close_locked()
            raise DatabaseMissing(self.path, f"cannot stat: {e.strerror}") from None
        replaced = False
        if self._identity is not None and self._identity != (st.st_dev, st.st_ino):
            replaced = True  # a new inode: another file was moved into place
            self._close_locked()
            self._reset()
        stat_key = (st.st_size, st.st_mtime_ns)
        if self._conn is not None and self._stat is not None and stat_key != self._stat:
            # The main file was written (a checkpoint, a rollback-mode commit, or a copy
            # over it in place, which a WAL reader's page cache would not notice): reconnect.
            self._close_locked()
        if self._conn is None:
            # First open, a new file, or reconnecting (counts kept: the content check
            # below catches a file rewritten in the meantime).
            self._open_locked()
        conn = self._conn
        assert conn is not None
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
            self._scan_new_games(conn)
            self._recheck_pending(conn)
            self._scan_orphans(conn)
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
                key = _config_of(board, players)
                kind = _classify(status, winner) if key else "other"
                self._bump(key, kind, 1)
                if kind == "active":
                    self._pending[rowid] = key
                gid = str(gid)
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
                kind = _classify(status, winner)
                if kind != "active":
                    key = self._pending.pop(rowid)
                    self._bump(key, "active", -1)
                    self._bump(key, kind, 1)
                    self._status_updates += 1
            for rowid in set(chunk) - seen:  # deleted while pending
                self._bump(self._pending.pop(rowid), "active", -1)

    def _scan_orphans(self, conn: sqlite3.Connection) -> None:
        """Games with moves but no ``games`` row, among the move rows added since the last pass."""
        top = conn.execute("SELECT max(rowid) FROM game_moves").fetchone()[0] or 0
        if top <= self._moves_watermark:
            if top < self._moves_watermark:  # move rows deleted from the tail
                self._moves_watermark = top
            return
        if self._moves_watermark == 0 and self._moves_by_game:
            # First pass: hop from game to game along the game_id index (one seek per
            # game) instead of reading every move row; the transaction bounds it at `top`.
            rows = conn.execute(_ORPHANS_BY_INDEX)
        else:  # DISTINCT first, then one games lookup per game (not per move row).
            rows = conn.execute(
                "SELECT gid FROM (SELECT DISTINCT game_id AS gid FROM game_moves"
                " WHERE rowid > ? AND rowid <= ?)"
                " WHERE NOT EXISTS (SELECT 1 FROM games g WHERE g.game_id = gid)",
                (self._moves_watermark, top),
            )
        new_ids = [str(gid) for (gid,) in rows]
        for gid in new_ids:
            if gid not in self._orphans:
                key = self._orphan_config(conn, gid)
                self._orphans[gid] = key
                self._bump(key, "orphan", 1)
        self._moves_watermark = top

    def _orphan_config(self, conn: sqlite3.Connection, game_id: str) -> str | None:
        """Board and player count of an orphan from its initial state or player rows."""
        board: Any = None
        players: Any = None
        if "game_initial_state" in self._tables:
            row = conn.execute(
                "SELECT initial_state_json, compressed FROM game_initial_state WHERE game_id=?", (game_id,)
            ).fetchone()
            if row and not row[1]:
                try:
                    state = orjson.loads(row[0])
                    board = state.get("boardType") or (state.get("board") or {}).get("type")
                    if isinstance(state.get("players"), list):
                        players = len(state["players"])
                except (orjson.JSONDecodeError, AttributeError, TypeError):
                    pass
        if "game_players" in self._tables:
            n = conn.execute("SELECT count(*) FROM game_players WHERE game_id=?", (game_id,)).fetchone()[0]
            players = n or players
        return _config_of(board, players)

    def _build(self, *, replaced: bool, changed: bool) -> SourceSnapshot:
        configs: dict[str, ConfigSnapshot] = {}
        keys = set(self._usable) | set(self._skips) | set(self._config_max)
        for key in sorted(keys):
            usable = self._usable.get(key, 0)
            wm, gid = self._config_max.get(key, (0, ""))
            sig_src = f"{self._identity}|{wm}|{gid}|{usable}"
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
            schema_version=self._schema_version,
            identity=self._identity,
            max_rowid=self._watermark,
            status_updates=self._status_updates,
            replaced=replaced,
            changed=changed,
            configs=configs,
            orphans=tuple(sorted(self._orphans)),
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
    ) -> Iterator[Game]:
        """Usable games of ``config_key`` with ``rowid <= upto_rowid``, one at a time.

        ``rowids`` restricts them to those rows. Uses its own connection so streaming
        never blocks :meth:`refresh`.
        """
        board, n = parse_config_key(config_key)
        aliases = board_aliases(board)
        conn = self._reader()
        try:
            yield from stream_games(
                conn, aliases, n, upto_rowid, newest_first, limit, min_rowid, sources, rowids
            )
        except sqlite3.Error as e:
            raise _translate(self.path, e) from None
        finally:
            conn.close()

    def iter_game_keys(
        self,
        config_key: str,
        *,
        upto_rowid: int | None = None,
        newest_first: bool = True,
        limit: int | None = None,
    ) -> Iterator[tuple[str, int]]:
        """``(created_at or "", rowid)`` of the games :meth:`iter_games` yields, in order; reads no moves."""
        board, n = parse_config_key(config_key)
        conn = self._reader()
        try:
            yield from game_keys(conn, board_aliases(board), n, upto_rowid, newest_first, limit)
        except sqlite3.Error as e:
            raise _translate(self.path, e) from None
        finally:
            conn.close()

    def _reader(self) -> sqlite3.Connection:
        uri = f"file:{quote(str(self.path.absolute()))}?mode=ro"
        try:
            return sqlite3.connect(uri, uri=True, timeout=self.busy_timeout)
        except sqlite3.Error as e:
            raise _translate(self.path, e) from None
