"""A game's moves: parsed from ``game_moves`` rows into columns, defensively.

Move JSON is decoded with msgspec against a schema of the four fields we use
(``type``, ``from``, ``to``, ``captureTarget``): the other ~20 keys of a move
are skipped in C instead of being built into dicts, which made parsing the
largest cost of an export. A row that does not fit the schema is decoded again
loosely, so odd shapes still give the same per-field answers.

A game's moves come as :class:`MoveColumns`: one column per field, filled by C
loops (``zip``, ``map`` of the decoder over the rows), so no Python bytecode runs
per move; ``Move`` tuples are built only when a caller indexes or iterates.

Foreign rows never raise: text arrives as bytes (game-database connections), a row
whose JSON is not UTF-8, not JSON, nested past msgspec's depth limit, or whose
``move_number`` is not an int32 integer gives a ``valid=False`` move, and
:func:`read_moves` counts it by reason (:data:`MOVE_REASONS`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from operator import attrgetter
from typing import Any, NamedTuple, overload

import msgspec

Pos = tuple[int, int, int | None]
# The NPZ stores move numbers as int32: an array of this typecode takes exactly the integers that
# fit (TypeError for a REAL, text, blob or NULL, OverflowError past int32), in one C loop.
INT32_CODE = next(c for c in "ihl" if array(c).itemsize == 4)
# Why a move row was unusable (export ``skipped`` keys; each counts rows).
BAD_JSON, INVALID_UTF8, TOO_DEEP, BAD_NUMBER = (
    "move_bad_json",
    "move_invalid_utf8",
    "move_too_deep",
    "move_bad_number",
)
MOVE_REASONS = (BAD_JSON, INVALID_UTF8, TOO_DEEP, BAD_NUMBER)
_LABEL_CACHE = 4096


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
# What a decode of a foreign row may raise: ValidationError is a DecodeError; TypeError for
# a value that is no text (an INTEGER move_json); RecursionError past msgspec's depth limit.
_DECODE_ERRORS = (msgspec.DecodeError, TypeError, RecursionError)


class _Labels(dict[Any, str | None]):
    """Text label of a ``phase``/``move_type`` value as read (bytes, str, None, a number)."""

    def __missing__(self, raw: Any) -> str | None:
        if raw is None or isinstance(raw, str):
            label = raw
        elif isinstance(raw, bytes):
            label = raw.decode("utf-8", "replace")
        else:
            label = str(raw)
        if len(self) < _LABEL_CACHE:  # distinct values are few; foreign junk is not kept
            self[raw] = label
        return label


LABEL = _Labels().__getitem__  # C-level on a hit: mapped over a column without bytecode


def _pos(v: Any) -> Pos | None:
    if not isinstance(v, dict):
        return None
    x, y, z = v.get("x"), v.get("y"), v.get("z")
    if type(x) is not int or type(y) is not int or (z is not None and type(z) is not int):
        return None
    return x, y, z


def _spos(p: JsonPos | None) -> Pos | None:
    return None if p is None else (p.x, p.y, p.z)


def _why(raw: Any, e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return TOO_DEEP
    if isinstance(raw, bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return INVALID_UTF8
    return BAD_JSON


def parse_row(move_number: Any, player: Any, phase: Any, mtype: Any, raw: Any) -> tuple[Move, str | None]:
    """One ``game_moves`` row as a :class:`Move`, and why it is not valid (None when it is)."""
    phase, mtype = LABEL(phase), LABEL(mtype)
    if not _int32s((move_number,)):
        return Move(0, player, phase, mtype, None, None, None, valid=False), BAD_NUMBER
    try:
        m = _STRICT.decode(raw)
        return Move(
            move_number, player, phase, mtype or m.type, _spos(m.from_), _spos(m.to), _spos(m.captureTarget)
        ), None
    except msgspec.ValidationError:
        pass  # valid JSON of another shape: per-field answers below
    except _DECODE_ERRORS as e:
        return Move(move_number, player, phase, mtype, None, None, None, valid=False), _why(raw, e)
    try:
        d = _LOOSE.decode(raw)
    except _DECODE_ERRORS as e:  # not an object at the top, or nested too deep
        return Move(move_number, player, phase, mtype, None, None, None, valid=False), _why(raw, e)
    t = d.type
    return Move(
        move_number,
        player,
        phase,
        mtype or (t if isinstance(t, str) else None),
        _pos(d.from_),
        _pos(d.to),
        _pos(d.captureTarget),
    ), None


def parse_move(move_number: Any, player: Any, phase: Any, mtype: Any, raw: str | bytes) -> Move:
    """Parse one ``move_json``; a bad row gives a ``valid=False`` move, never an exception."""
    return parse_row(move_number, player, phase, mtype, raw)[0]


_FROM, _TO, _CAPTURE = attrgetter("from_"), attrgetter("to"), attrgetter("captureTarget")


def _int32s(values: Sequence[Any]) -> bool:
    """Whether every value is an integer that fits int32."""
    try:
        array(INT32_CODE, values)
    except (TypeError, OverflowError):
        return False
    return True


NO_DEFECTS: dict[str, int] = {}  # shared; never mutated


def read_moves(rows: list[tuple[Any, ...]]) -> tuple[MoveColumns, dict[str, int]]:
    """A game's ``(move_number, player, phase, move_type, move_json)`` rows as columns, and the
    rows that were not valid, counted by reason.

    The common case (every row fits the strict schema, every number an int32) runs in C:
    the decoder is mapped over the JSON column. Any odd row sends the whole game through
    :func:`parse_row`, one row at a time, which gives the same per-field answers.
    """
    if not rows:
        return MoveColumns.from_moves(()), NO_DEFECTS
    numbers, players, phases, types, raws = zip(*rows, strict=True)
    if _int32s(numbers):
        try:
            decoded = list(map(_STRICT.decode, raws))
        except _DECODE_ERRORS:
            pass
        else:
            phases, types = tuple(map(LABEL, phases)), tuple(map(LABEL, types))
            if not all(types):  # a row without move_type takes the JSON "type"
                types = tuple(c or m.type for c, m in zip(types, decoded, strict=True))
            cols = MoveColumns(
                numbers,
                players,
                phases,
                types,
                tuple(map(_FROM, decoded)),
                tuple(map(_TO, decoded)),
                tuple(map(_CAPTURE, decoded)),
            )
            return cols, NO_DEFECTS
    moves: list[Move] = []
    defects: dict[str, int] = {}
    for r in rows:
        move, why = parse_row(*r)
        moves.append(move)
        if why is not None:
            defects[why] = defects.get(why, 0) + 1
    return MoveColumns.from_moves(moves), defects


def moves_from_rows(rows: list[tuple[Any, ...]]) -> MoveColumns:
    """:func:`read_moves` without the defect counts."""
    return read_moves(rows)[0]
