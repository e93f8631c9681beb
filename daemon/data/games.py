"""Game records read from a GameReplayDB: players, moves (parsed), outcome, metadata.

Streaming: one game (and its moves) at a time, so memory does not grow with the
database. The SQL selects a superset of the usable games (:func:`usable_sql`); each
row then passes the poll's own rule (:func:`classify_row`), so the export reads exactly
the games the poll counted. Values are read as SQLite stored them (text as bytes) and
turned into the record's types defensively: a foreign row never raises, a bad move row
is a ``valid=False`` move counted in :attr:`Game.defects`, a bad player row is dropped
and counted. Moves and players are found through the game's ``rowid`` (any ``game_id``
value matches itself, even one that is not UTF-8).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from daemon.data.moves import (  # re-exported: the move records' home was this module
    LABEL,
    NO_DEFECTS,
    JsonPos,
    Move,
    MoveColumns,
    Pos,
    PosKey,
    moves_from_rows,
    parse_move,
    read_moves,
)
from daemon.data.opening import Schema
from daemon.data.usable import USABLE_STATUSES, as_int, classify_row, text, usable_sql
from daemon.keys import board_aliases, parse_config_key

__all__ = [
    "USABLE_STATUSES",
    "Game",
    "JsonPos",
    "Move",
    "MoveColumns",
    "Player",
    "Pos",
    "PosKey",
    "game_keys",
    "moves_from_rows",
    "parse_move",
    "read_moves",
    "stream_games",
]

OPTIONAL_GAME_COLUMNS = (
    "source",
    "created_at",
    "metadata_json",
    "opponent_model_id",
    "opponent_type",
    "quality_score",
    "engine_mode",
)
PLAYER_COLUMNS = (
    "player_number",
    "player_type",
    "ai_type",
    "ai_profile_id",
    "final_eliminated_rings",
    "final_territory_spaces",
)
BAD_PLAYER_ROW = "player_bad_row"  # a game_players row whose seat is not an integer
_BY_ROWID = "(SELECT game_id FROM games WHERE rowid = ?)"
_PREDICATE = ("board_type", "num_players", "game_status", "winner")


@dataclass(frozen=True)
class Player:
    seat: int
    player_type: str | None
    ai_type: str | None
    profile_id: str | None
    eliminated_rings: int | None
    territory_spaces: int | None


@dataclass(frozen=True)
class Game:
    game_id: str
    rowid: int
    board_type: str
    num_players: int
    status: str
    winner: int | None
    source: str | None
    created_at: str | None
    metadata: dict[str, Any]
    players: list[Player]
    moves: Sequence[Move]  # MoveColumns when read from a database
    ranking: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Rows of this game the reader could not use, by reason (moves: valid=False; players: dropped).
    defects: dict[str, int] = field(default_factory=dict)


def _game_query(
    schema: Schema,
    key: str,
    upto: int | None,
    newest: bool,
    min_rowid: int,
    sources: tuple[str, ...] | None,
    rowids: Sequence[int] | None,
    optional: Sequence[str] = OPTIONAL_GAME_COLUMNS,
) -> tuple[str, list[Any], list[str]] | None:
    """The usable-games prefilter SELECT (rowid, game_id, the rule's columns, ``optional`` ones).

    No LIMIT: rows the rule rejects must not count against it (callers stop early instead;
    SQLite streams a rowid-ordered scan, so that costs nothing).
    """
    board, n = parse_config_key(key)
    aliases = board_aliases(board)
    opt = [c for c in optional if c in schema.game_cols]
    sel = ", ".join(["rowid", "game_id", *_PREDICATE, *opt])
    sql = f"SELECT {sel} FROM games WHERE {usable_sql(aliases)} AND rowid <= ? AND rowid > ?"
    params: list[Any] = [*aliases, n, upto if upto is not None else 2**62, min_rowid]
    if sources is not None:
        if "source" not in schema.game_cols:
            return None
        sql += f" AND lower(source) IN ({','.join('?' * len(sources))})"
        params.extend(s.lower() for s in sources)
    if rowids is not None:
        sql += f" AND rowid IN ({','.join('?' * len(rowids))})"
        params.extend(rowids)
    sql += f" ORDER BY rowid {'DESC' if newest else 'ASC'}"
    return sql, params, opt


def _usable_rows(
    conn: sqlite3.Connection, sql: str, params: list[Any], key: str, limit: int | None
) -> Iterator[tuple[Any, ...]]:
    """Rows of ``sql`` that the poll's rule says are usable games of ``key``, at most ``limit``."""
    if limit is not None and limit <= 0:
        return
    want = (key, "usable")
    left = limit
    cur = conn.execute(sql, params)
    try:
        while rows := cur.fetchmany(64):
            for row in rows:
                if classify_row(*row[2:6]) != want:
                    continue  # e.g. a REAL player count: the poll did not count it either
                yield row
                if left is not None:
                    left -= 1
                    if not left:
                        return
    finally:
        cur.close()


def game_keys(
    conn: sqlite3.Connection,
    schema: Schema,
    key: str,
    upto: int | None,
    newest: bool,
    limit: int | None,
) -> Iterator[tuple[str, int]]:
    """``(created_at or "", rowid)`` of the games :func:`stream_games` yields, in the same order."""
    # Only the merge key's column: a header-heavy database's metadata is never read here.
    q = _game_query(schema, key, upto, newest, 0, None, None, ("created_at",))
    assert q is not None  # no source filter
    sql, params, opt = q
    at = 6 + opt.index("created_at") if "created_at" in opt else None
    for row in _usable_rows(conn, sql, params, key, limit):
        yield (text(row[at]) or "") if at is not None else "", row[0]  # the merge key of Game


def stream_games(
    conn: sqlite3.Connection,
    schema: Schema,
    key: str,
    upto: int | None,
    newest: bool,
    limit: int | None,
    min_rowid: int = 0,
    sources: tuple[str, ...] | None = None,
    rowids: Sequence[int] | None = None,
) -> Iterator[Game]:
    """Usable games of one config from an open read-only connection, one at a time.

    ``rowids`` restricts the games to those rows (still in rowid order).
    """
    q = _game_query(schema, key, upto, newest, min_rowid, sources, rowids)
    if q is None:
        return
    sql, params, opt = q
    board, n = parse_config_key(key)
    phase_col = "phase" if "phase" in schema.move_cols else "NULL"
    type_col = "move_type" if "move_type" in schema.move_cols else "NULL"
    move_sql = (
        f"SELECT move_number, player, {phase_col}, {type_col}, move_json FROM game_moves"
        f" WHERE game_id = {_BY_ROWID} ORDER BY move_number"
    )
    player_sql = None
    if "game_players" in schema.tables and "player_number" in schema.player_cols:
        pcols = ", ".join(c if c in schema.player_cols else "NULL" for c in PLAYER_COLUMNS)
        player_sql = f"SELECT {pcols} FROM game_players WHERE game_id = {_BY_ROWID} ORDER BY player_number"
    inner = conn.cursor()
    try:
        for row in _usable_rows(conn, sql, params, key, limit):
            rowid, gid, _, _, status, winner = row[:6]
            rec = dict(zip(opt, row[6:], strict=True))
            moves, defects = read_moves(inner.execute(move_sql, (rowid,)).fetchall())
            players: list[Player] = []
            if player_sql is not None:
                players, bad = _players(inner.execute(player_sql, (rowid,)).fetchall())
                if bad:
                    defects = {**defects, BAD_PLAYER_ROW: bad}
            yield Game(
                game_id=text(gid) or "",
                rowid=rowid,
                board_type=board,
                num_players=n,
                status=text(status) or "",
                winner=winner,
                source=text(rec.get("source")),
                created_at=text(rec.get("created_at")),
                metadata=_json_dict(rec.get("metadata_json")),
                players=players,
                moves=moves,
                ranking=_ranking(winner, players, n),
                extra={
                    k: _plain(rec[k])
                    for k in ("opponent_model_id", "opponent_type", "quality_score", "engine_mode")
                    if k in rec
                },
                defects=defects if defects is not NO_DEFECTS else {},
            )
    finally:
        inner.close()


def _players(rows: list[tuple[Any, ...]]) -> tuple[list[Player], int]:
    """Player records of a game's rows, and how many rows were dropped (a seat that is no integer)."""
    out = []
    for seat, ptype, ai, profile, rings, territory in rows:
        if type(seat) is not int:
            continue
        out.append(Player(seat, LABEL(ptype), LABEL(ai), LABEL(profile), as_int(rings), as_int(territory)))
    return out, len(rows) - len(out)


def _plain(value: Any) -> Any:
    return text(value) if isinstance(value, bytes) else value


def _json_dict(raw: Any) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        v = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):  # orjson bounds the nesting depth itself
        return {}
    return v if isinstance(v, dict) else {}


def _ranking(winner: int, players: list[Player], n: int) -> list[int] | None:
    """Seats best -> worst: the winner first, then by territory, then eliminated rings."""
    seats = [p.seat for p in players if 1 <= p.seat <= n]
    if sorted(seats) != list(range(1, n + 1)) or winner not in seats:
        return None
    rest = sorted(
        (p for p in players if p.seat != winner),
        key=lambda p: (-(p.territory_spaces or 0), -(p.eliminated_rings or 0), p.seat),
    )
    return [winner, *(p.seat for p in rest)]
