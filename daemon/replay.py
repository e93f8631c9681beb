"""Game records read from a GameReplayDB: players, moves (parsed), outcome, metadata.

Streaming: one game (and its moves) at a time, so memory does not grow with the
database. Malformed move JSON gives a ``valid=False`` move, never an exception.

Move JSON is decoded with msgspec against a schema of the four fields we use
(``type``, ``from``, ``to``, ``captureTarget``): the other ~20 keys of a move
are skipped in C instead of being built into dicts, which made parsing the
largest cost of an export. A row that does not fit the schema is decoded again
loosely, so odd shapes still give the same per-field answers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import orjson

from daemon.keys import normalize_board

USABLE_STATUSES = frozenset({"completed", "finished"})

Pos = tuple[int, int, int | None]
OPTIONAL_GAME_COLUMNS = (
    "source",
    "created_at",
    "metadata_json",
    "opponent_model_id",
    "opponent_type",
    "quality_score",
    "engine_mode",
)


@dataclass(frozen=True)
class Player:
    seat: int
    player_type: str | None
    ai_type: str | None
    profile_id: str | None
    eliminated_rings: int | None
    territory_spaces: int | None


class Move(NamedTuple):
    # A tuple, not a dataclass: an export builds ~100 of these per game.
    move_number: int
    player: int
    phase: str | None
    move_type: str | None
    from_pos: Pos | None
    to_pos: Pos | None
    capture_target: Pos | None
    # False when the move JSON could not be parsed; positions are then None.
    valid: bool = True


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
    moves: list[Move]
    ranking: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _JsonPos(msgspec.Struct):
    x: int
    y: int
    z: int | None = None


class _StrictMove(msgspec.Struct):
    type: str | None = None
    from_: _JsonPos | None = msgspec.field(default=None, name="from")
    to: _JsonPos | None = None
    captureTarget: _JsonPos | None = None


class _LooseMove(msgspec.Struct):
    type: Any = None
    from_: Any = msgspec.field(default=None, name="from")
    to: Any = None
    captureTarget: Any = None


_STRICT = msgspec.json.Decoder(_StrictMove)
_LOOSE = msgspec.json.Decoder(_LooseMove)


def _pos(v: Any) -> Pos | None:
    if not isinstance(v, dict):
        return None
    x, y, z = v.get("x"), v.get("y"), v.get("z")
    if type(x) is not int or type(y) is not int or (z is not None and type(z) is not int):
        return None
    return x, y, z


def _spos(p: _JsonPos | None) -> Pos | None:
    return None if p is None else (p.x, p.y, p.z)


def parse_move(move_number: int, player: int, phase: str | None, mtype: str | None, raw: str | bytes) -> Move:
    """Parse one ``move_json``; malformed JSON gives a ``valid=False`` move, never an exception."""
    try:
        m = _STRICT.decode(raw)
        return Move(
            move_number,
            player,
            phase,
            mtype or m.type,
            _spos(m.from_),
            _spos(m.to),
            _spos(m.captureTarget),
        )
    except msgspec.ValidationError:
        pass  # valid JSON of another shape: per-field answers below
    except (msgspec.DecodeError, TypeError):
        return Move(move_number, player, phase, mtype, None, None, None, valid=False)
    try:
        d = _LOOSE.decode(raw)
    except (msgspec.DecodeError, TypeError):  # not an object at the top
        return Move(move_number, player, phase, mtype, None, None, None, valid=False)
    t = d.type
    return Move(
        move_number,
        player,
        phase,
        mtype or (t if isinstance(t, str) else None),
        _pos(d.from_),
        _pos(d.to),
        _pos(d.captureTarget),
    )


def _moves(rows: Iterator[tuple[Any, ...]]) -> list[Move]:
    """``parse_move`` over a game's rows, with the common well-formed case inlined (the hot loop)."""
    out: list[Move] = []
    append, decode = out.append, _STRICT.decode
    for mn, player, phase, mtype, raw in rows:
        try:
            m = decode(raw)
        except (msgspec.DecodeError, TypeError):
            append(parse_move(mn, player, phase, mtype, raw))
            continue
        f, t, c = m.from_, m.to, m.captureTarget
        append(
            Move(
                mn,
                player,
                phase,
                mtype or m.type,
                None if f is None else (f.x, f.y, f.z),
                None if t is None else (t.x, t.y, t.z),
                None if c is None else (c.x, c.y, c.z),
            )
        )
    return out


def _game_query(
    conn: sqlite3.Connection,
    aliases: tuple[str, ...],
    n: int,
    upto: int | None,
    newest: bool,
    limit: int | None,
    min_rowid: int,
    sources: tuple[str, ...] | None,
    rowids: Sequence[int] | None,
) -> tuple[str, list[Any], list[str]] | None:
    """The usable-games SELECT (every game column we read), its parameters and optional columns."""
    gcols = {r[1] for r in conn.execute("PRAGMA table_info(games)")}
    opt = [c for c in OPTIONAL_GAME_COLUMNS if c in gcols]
    sel = ", ".join(["rowid", "game_id", "board_type", "num_players", "game_status", "winner", *opt])
    marks = ",".join("?" * len(aliases))
    statuses = ",".join(f"'{s}'" for s in sorted(USABLE_STATUSES))
    sql = (
        f"SELECT {sel} FROM games WHERE board_type IN ({marks}) AND num_players = ?"
        f" AND lower(game_status) IN ({statuses}) AND winner IS NOT NULL AND rowid <= ? AND rowid > ?"
    )
    params: list[Any] = [*aliases, n, upto if upto is not None else 2**62, min_rowid]
    if sources is not None:
        if "source" not in gcols:
            return None
        sql += f" AND lower(source) IN ({','.join('?' * len(sources))})"
        params.extend(s.lower() for s in sources)
    if rowids is not None:
        sql += f" AND rowid IN ({','.join('?' * len(rowids))})"
        params.extend(rowids)
    sql += f" ORDER BY rowid {'DESC' if newest else 'ASC'}"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params, opt


def game_keys(
    conn: sqlite3.Connection,
    aliases: tuple[str, ...],
    n: int,
    upto: int | None,
    newest: bool,
    limit: int | None,
) -> Iterator[tuple[str, int]]:
    """``(created_at or "", rowid)`` of the games :func:`stream_games` yields, in the same order."""
    q = _game_query(conn, aliases, n, upto, newest, limit, 0, None, None)
    assert q is not None  # no source filter
    sql, params, opt = q
    created = "created_at" if "created_at" in opt else "NULL"
    cur = conn.execute(f"SELECT {created}, rowid FROM ({sql})", params)
    while rows := cur.fetchmany(4096):
        for c, rowid in rows:
            yield c or "", rowid  # the merge key of Game: (created_at or "", rowid)


def stream_games(
    conn: sqlite3.Connection,
    aliases: tuple[str, ...],
    n: int,
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
    mcols = {r[1] for r in conn.execute("PRAGMA table_info(game_moves)")}
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    q = _game_query(conn, aliases, n, upto, newest, limit, min_rowid, sources, rowids)
    if q is None:
        return
    sql, params, opt = q
    phase_col = "phase" if "phase" in mcols else "NULL"
    type_col = "move_type" if "move_type" in mcols else "NULL"
    move_sql = (
        f"SELECT move_number, player, {phase_col}, {type_col}, move_json FROM game_moves"
        " WHERE game_id = ? ORDER BY move_number"
    )
    has_players = "game_players" in tables
    games = conn.execute(sql, params)
    inner = conn.cursor()
    while rows := games.fetchmany(64):
        for row in rows:
            rec = dict(
                zip(
                    ["rowid", "game_id", "board_type", "num_players", "status", "winner", *opt],
                    row,
                    strict=True,
                )
            )
            gid = rec["game_id"]
            moves = _moves(inner.execute(move_sql, (gid,)))
            players = _players(inner, gid) if has_players else []
            yield Game(
                game_id=str(gid),
                rowid=rec["rowid"],
                board_type=normalize_board(rec["board_type"]),
                num_players=int(rec["num_players"]),
                status=str(rec["status"]),
                winner=int(rec["winner"]),
                source=rec.get("source"),
                created_at=rec.get("created_at"),
                metadata=_json_dict(rec.get("metadata_json")),
                players=players,
                moves=moves,
                ranking=_ranking(int(rec["winner"]), players, int(rec["num_players"])),
                extra={
                    k: rec[k]
                    for k in ("opponent_model_id", "opponent_type", "quality_score", "engine_mode")
                    if k in rec
                },
            )
    inner.close()


def _players(cur: sqlite3.Cursor, game_id: str) -> list[Player]:
    rows = cur.execute(
        "SELECT player_number, player_type, ai_type, ai_profile_id, final_eliminated_rings,"
        " final_territory_spaces FROM game_players WHERE game_id = ? ORDER BY player_number",
        (game_id,),
    ).fetchall()
    return [Player(*r) for r in rows]


def _json_dict(raw: Any) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        v = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
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
