"""Game records read from a GameReplayDB: players, moves (parsed), outcome, metadata.

Streaming: one game (and its moves) at a time, so memory does not grow with the
database. Malformed move JSON gives a ``valid=False`` move, never an exception.

Move JSON is decoded with msgspec against a schema of the four fields we use
(``type``, ``from``, ``to``, ``captureTarget``): the other ~20 keys of a move
are skipped in C instead of being built into dicts, which made parsing the
largest cost of an export. A row that does not fit the schema is decoded again
loosely, so odd shapes still give the same per-field answers.

A game's moves come as :class:`MoveColumns`: one column per field, filled by C
loops (``zip``, ``map`` of the decoder over the rows), so no Python bytecode runs
per move; ``Move`` tuples are built only when a caller indexes or iterates.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple, overload

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
    # A tuple: cheap to build on demand from a game's MoveColumns.
    move_number: int
    player: int
    phase: str | None
    move_type: str | None
    from_pos: Pos | None
    to_pos: Pos | None
    capture_target: Pos | None
    # False when the move JSON could not be parsed; positions are then None.
    valid: bool = True


class JsonPos(msgspec.Struct, frozen=True, gc=False):
    """A decoded board position; frozen, so hashable: the encoder maps it to a cell with a dict.

    ``gc=False``: ints only, never part of a cycle, so the collector need not track
    the ~3 per move an export builds (measured: 7% of an export's time).
    """

    x: int
    y: int
    z: int | None = None


# A position as a column holds it: decoded (JsonPos), parsed one by one (tuple) or absent.
PosKey = JsonPos | Pos | None


def _as_pos(p: PosKey) -> Pos | None:
    return (p.x, p.y, p.z) if isinstance(p, JsonPos) else p


class MoveColumns(Sequence[Move]):
    """A game's (or a block's) moves as columns; indexing or iterating gives :class:`Move` tuples.

    ``from_pos``/``to_pos``/``capture_target`` hold :data:`PosKey` values; ``valid`` is
    None when every move parsed.
    """

    __slots__ = (
        "capture_target",
        "from_pos",
        "move_numbers",
        "move_types",
        "phases",
        "players",
        "to_pos",
        "valid",
    )

    def __init__(
        self,
        move_numbers: Sequence[Any],
        players: Sequence[Any],
        phases: Sequence[Any],
        move_types: Sequence[Any],
        from_pos: Sequence[PosKey],
        to_pos: Sequence[PosKey],
        capture_target: Sequence[PosKey],
        valid: Sequence[bool] | None = None,
    ) -> None:
        self.move_numbers, self.players, self.phases, self.move_types = (
            move_numbers,
            players,
            phases,
            move_types,
        )
        self.from_pos, self.to_pos, self.capture_target, self.valid = from_pos, to_pos, capture_target, valid

    @classmethod
    def from_moves(cls, moves: Iterable[Move]) -> MoveColumns:
        ms = list(moves)
        if not ms:
            return cls((), (), (), (), (), (), (), None)
        num, player, phase, mtype, frm, to, cap, valid = zip(*ms, strict=True)
        return cls(num, player, phase, mtype, frm, to, cap, None if all(valid) else valid)

    @classmethod
    def of(cls, moves: Sequence[Move]) -> MoveColumns:
        return moves if isinstance(moves, MoveColumns) else cls.from_moves(moves)

    def __len__(self) -> int:
        return len(self.move_numbers)

    def _move(self, i: int) -> Move:
        return Move(
            self.move_numbers[i],
            self.players[i],
            self.phases[i],
            self.move_types[i],
            _as_pos(self.from_pos[i]),
            _as_pos(self.to_pos[i]),
            _as_pos(self.capture_target[i]),
            True if self.valid is None else self.valid[i],
        )

    @overload
    def __getitem__(self, i: int) -> Move: ...
    @overload
    def __getitem__(self, i: slice) -> list[Move]: ...
    def __getitem__(self, i: int | slice) -> Move | list[Move]:
        if isinstance(i, slice):
            return [self._move(j) for j in range(len(self))[i]]
        if not -len(self) <= i < len(self):
            raise IndexError("move index out of range")
        return self._move(i % len(self))

    def __iter__(self) -> Iterator[Move]:
        return (self._move(i) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable-sequence semantics, like list

    def __repr__(self) -> str:
        return f"MoveColumns({list(self)!r})"


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


class _StrictMove(msgspec.Struct, gc=False):  # holds str/JsonPos/None only: no cycles
    type: str | None = None
    from_: JsonPos | None = msgspec.field(default=None, name="from")
    to: JsonPos | None = None
    captureTarget: JsonPos | None = None


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


def _spos(p: JsonPos | None) -> Pos | None:
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


_FROM, _TO, _CAPTURE = attrgetter("from_"), attrgetter("to"), attrgetter("captureTarget")


def moves_from_rows(rows: list[tuple[Any, ...]]) -> MoveColumns:
    """A game's ``(move_number, player, phase, move_type, move_json)`` rows as columns.

    The common case (every row fits the strict schema) runs in C: the decoder is
    mapped over the JSON column. Any odd row sends the whole game through
    :func:`parse_move`, one row at a time, which gives the same per-field answers.
    """
    if not rows:
        return MoveColumns.from_moves(())
    numbers, players, phases, types, raws = zip(*rows, strict=True)
    try:
        decoded = list(map(_STRICT.decode, raws))
    except (msgspec.DecodeError, TypeError):  # ValidationError is a DecodeError
        return MoveColumns.from_moves(parse_move(*r) for r in rows)
    if not all(types):  # a row without move_type takes the JSON "type"
        types = tuple(c or m.type for c, m in zip(types, decoded, strict=True))
    return MoveColumns(
        numbers,
        players,
        phases,
        types,
        tuple(map(_FROM, decoded)),
        tuple(map(_TO, decoded)),
        tuple(map(_CAPTURE, decoded)),
    )


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
            moves = moves_from_rows(inner.execute(move_sql, (gid,)).fetchall())
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
