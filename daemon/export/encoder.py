"""The built-in move-history encoder (``move_history`` v1) and the encoder protocol.

The product has no rules engine, so a position is described by the moves that
led to it. Deterministic: the same game always gives the same bytes.

**Samples.** Move ``i`` of a game (0-based, in ``move_number`` order) is one
sample when ``i % sample_every == 0``: the input is the history before move
``i``, the policy target is move ``i`` itself, the value is the game outcome.

**Planes** (0/1, ``C = 16 * history_length + 1``, ``H = W = grid``; 65 for
the default history of 4). Every plane but the last holds at most one cell, so
they are stored as cell indices (``cells`` layout, export format 3):
``feature_cells`` is ``int16`` ``(N, C)``, entry ``[n, c]`` = ``row*W + col``
of plane ``c``'s cell or -1 when it is empty, and ``feature_constant``
``(C, H, W)`` holds the planes every sample shares (the mask);
``dense[n, c] = max(constant[c], onehot(cells[n, c]))``. 130 B per sample
instead of 625 B bit-packed (square8) or 5 KB (hexagonal): the export is bound
by the bytes it writes. For each seat slot ``r`` in 0..3 relative to
the player to move (``r = 0`` the mover, then the next seats in turn order;
slots beyond the player count stay zero) and each ``h`` in
0..history_length-1 (that seat's ``h``-th most recent move before the
position), 4 planes at index ``(r * history_length + h) * 4 + k``:

  ``k``: 0 placement to-cell; 1 from-cell; 2 to-cell; 3 capture target.

The move group is read from which planes are set: placement = plane 0;
movement = from + to; capture = from + to + target; other positional
bookkeeping moves (``process_line`` ...) = to only. (One plane per group and
end would be 9 planes per move; this layout carries the same facts in 4 and
keeps the file 2.3x smaller: the export is bound by the bytes it writes.)
"Pass" moves (``no_*_action``, ``skip*``) paint nothing. The last plane
(``C - 1``) is the board-cell mask (1 on cells of the board; hex boards are
embedded in their grid at ``row = z + r``, ``col = x + r``).

**Move groups** (from ``move_type``): ``no_*``/``skip*``/``pass`` -> pass;
``*place*`` -> placement; ``*capture*`` -> capture; ``*move*`` -> movement;
anything else -> other.

**Globals** (``float32``, 17): 0 move number / (2 x board moves-per-game),
clipped to 1; 1-4 player to move one-hot (seat 1..4); 5-7 player count one-hot
(2, 3, 4); 8-15 phase one-hot from the move's ``phase`` (ring_placement,
movement, capture, chain_capture, line_processing, territory_processing,
forced_elimination, other/unknown); 16 the mover's own moves so far /
board moves-per-game, clipped to 1.

**Policy** (``int32`` index in ``[0, policy_size)``; ``Cells`` = board cells in
row-major grid order, ``D`` ray directions, ``L`` max ray length):

  ``[0, Cells)``  placement at the to-cell;
  ``[Cells, Cells + Cells*D*L)``  movement or capture as a ray:
  ``Cells + (from * D + d) * L + (distance - 1)``;
  next ``Cells``: other (positional) move at its cell;
  last 5: pass moves (no_placement_action, no_movement_action, no_line_action,
  no_territory_action, any other pass).

  | board | cells | D | L | policy_size |
  | --- | --- | --- | --- | --- |
  | square8 | 64 | 8 | 7 | 3,717 |
  | square19 | 361 | 8 | 18 | 52,711 |
  | hex8 | 61 | 6 | 8 | 3,055 |
  | hexagonal | 469 | 6 | 24 | 68,479 |

**Values**: from the final ranking (seats best -> worst, from the game's player
rows) when known: rank ``k`` (0 = best) of ``n`` gets ``1 - 2k/(n-1)``;
otherwise the winner gets +1 and every other seat ``-1/(n-1)``. ``values_mp``
holds the value of seats 1..4 (0 for unused seats); ``values`` is the mover's.

**Skipped samples** (counted, never a crash): unparseable move JSON, a seat
outside 1..n, coordinates off the board, a movement/capture that is not a
straight ray: key ``malformed_move``.

Pluggable encoders: ``export.encoder: "package.module:Class"``; the class is
built as ``Class(history_length=N)`` and must satisfy :class:`Encoder`. A
plug-in's ``encode_game`` returns dense ``uint8`` planes ``(S, C, H, W)``
(stored as ``features``, any values 0-255) unless it sets
``feature_layout = "packbits"`` (returns packed rows) or ``"cells"`` (returns
int16 ``(S, C)`` cell rows and provides ``feature_constant(board)``, uint8
``(C, H, W)``); it may also offer ``encode_games`` (many games
in one call, rows tagged with ``game_index``), as the built-in one does: one
numpy pass per block of games instead of one per game.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from daemon.data.gamedb import Game
from daemon.data.games import MoveColumns
from daemon.export.policy import (
    CAPTURE,
    HEX_DIRS,
    MOVEMENT,
    OTHER,
    PASS,
    PASS_TYPES,
    PLACEMENT,
    SQUARE_DIRS,
    BoardLayout,
    board_layout,
    move_group,
    pass_index,
    rays,
    seat_of,
)
from daemon.keys import normalize_board
from daemon.npz.format import LAYOUT_CELLS

# Re-exported: plug-ins and tests import these from here.
__all__ = [
    "CAPTURE",
    "HEX_DIRS",
    "MOVEMENT",
    "OTHER",
    "PASS",
    "PASS_TYPES",
    "PLACEMENT",
    "SQUARE_DIRS",
    "BoardLayout",
    "EncodedGame",
    "Encoder",
    "EncoderError",
    "MoveHistoryEncoder",
    "board_layout",
    "check_encoder",
    "load_encoder",
    "move_group",
]

ENCODER_NAME = "move_history"
ENCODER_VERSION = 1
PLANES_PER_MOVE = 4
SEAT_SLOTS = 4
NUM_GLOBALS = 17
PHASES = (
    "ring_placement",
    "movement",
    "capture",
    "chain_capture",
    "line_processing",
    "territory_processing",
    "forced_elimination",
)

MALFORMED = "malformed_move"


class EncoderError(Exception):
    """An encoder that cannot be loaded or that breaks the protocol."""


@dataclass
class EncodedGame:
    """The samples of one game (or of a block of games), one row per sample."""

    # (S, C, H, W) uint8 dense, (S, C, ceil(H*W/8)) uint8 packbits or (S, C) int16 cells
    features: npt.NDArray[Any]
    globals: npt.NDArray[np.float32]  # (S, G)
    values: npt.NDArray[np.float32]  # (S,)
    values_mp: npt.NDArray[np.float32]  # (S, 4)
    policy_index: npt.NDArray[np.int32]  # (S,)
    move_numbers: npt.NDArray[np.int32]  # (S,)
    player_to_move: npt.NDArray[np.int8]  # (S,)
    skipped: dict[str, int] = field(default_factory=dict)
    game_index: npt.NDArray[np.int32] | None = None  # (S,) position in the block; None = one game

    @property
    def n(self) -> int:
        return int(self.policy_index.shape[0])


@runtime_checkable
class Encoder(Protocol):
    name: str
    version: int
    num_planes: int
    num_globals: int

    def policy_size(self, board: str) -> int: ...

    def encode_game(self, game: Game, sample_every: int) -> EncodedGame: ...


class MoveHistoryEncoder:
    """The built-in encoder (see the module docstring for the exact layout)."""

    name = ENCODER_NAME
    version = ENCODER_VERSION
    num_globals = NUM_GLOBALS
    feature_layout = LAYOUT_CELLS

    def __init__(self, history_length: int = 4) -> None:
        if history_length < 1:
            raise EncoderError(f"history_length must be >= 1 (got {history_length})")
        self.history_length = history_length
        self.num_planes = SEAT_SLOTS * history_length * PLANES_PER_MOVE + 1

    def policy_size(self, board: str) -> int:
        return board_layout(normalize_board(board)).policy_size

    def feature_constant(self, board: str) -> npt.NDArray[np.uint8]:
        """Planes shared by every sample (``cells`` layout): the board-cell mask, last."""
        geo = board_layout(normalize_board(board)).geo
        out = np.zeros((self.num_planes, geo.grid, geo.grid), dtype=np.uint8)
        out[-1] = geo.mask
        return out

    def _moves(self, b: BoardLayout, parts: Sequence[MoveColumns], n: int) -> tuple[npt.NDArray[Any], ...]:
        """Per move of a block: seat (0 = none), policy index (-1 = not a sample), 3 paint
        (plane, cell) pairs, move number and phase index.

        Each column is one ``map`` over a dict (distinct values are few) chained across
        the block's games, so no Python bytecode runs per move.
        """
        m = sum(len(c) for c in parts)

        def col(name: str) -> Iterator[Any]:
            return itertools.chain.from_iterable(getattr(c, name) for c in parts)

        get = b.cell_of.get  # None -> -1; off the board -> -2 (default)
        off_board = itertools.repeat(-2)
        to = np.fromiter(map(get, col("to_pos"), off_board), dtype=np.int64, count=m)
        fr = np.fromiter(map(get, col("from_pos"), off_board), dtype=np.int64, count=m)
        cap = np.fromiter(map(get, col("capture_target"), off_board), dtype=np.int64, count=m)
        # group * 8 + pass index per distinct move type (a pass index is < 8): one map per block
        kinds = {t: move_group(t) * 8 + pass_index(t) for t in set(col("move_types"))}
        kind = np.fromiter(map(kinds.__getitem__, col("move_types")), dtype=np.int64, count=m)
        grp = kind >> 3
        if set(map(type, col("players"))) <= {int}:  # the usual case: no bool, None or str seats
            p = np.fromiter(col("players"), dtype=np.int64, count=m)
            seat = np.where((p >= 1) & (p <= n), p, 0)
        else:
            seat = np.fromiter(map(seat_of, col("players"), itertools.repeat(n)), dtype=np.int64, count=m)
        if any(c.valid is not None for c in parts):
            valid = itertools.chain.from_iterable(c.valid or (True,) * len(c) for c in parts)
            seat *= np.fromiter(valid, dtype=np.bool_, count=m)
        move_number = np.fromiter(col("move_numbers"), dtype=np.int32, count=m)
        phases = {p: _phase_index(p) for p in set(col("phases"))}
        phase = np.fromiter(map(phases.__getitem__, col("phases")), dtype=np.int64, count=m)
        pol = np.full(m, -1, dtype=np.int64)
        # paint[i, k]: the cell move i paints on its plane k (-1 = none); row m is "no move".
        paint = np.full((m + 1, PLANES_PER_MOVE), -1, dtype=np.int16)
        ordinal = b.ordinal.astype(np.int64)
        ray_base = b.cells
        other_base = b.cells + b.cells * b.dirs * b.max_dist
        pass_base = other_base + b.cells
        live = seat > 0
        sel = live & (grp == PASS)
        pol[sel] = pass_base + (kind[sel] & 7)
        sel = live & (grp == PLACEMENT) & (to >= 0)
        pol[sel], paint[:m][sel, 0] = ordinal[to[sel]], to[sel]
        at = np.where(to != -1, to, fr)  # positional move: its to-cell, else its from-cell
        sel = live & (grp == OTHER) & (at >= 0)
        pol[sel], paint[:m][sel, 2] = other_base + ordinal[at[sel]], at[sel]
        ray = live & ((grp == MOVEMENT) | (grp == CAPTURE)) & (fr >= 0) & (to >= 0)
        ray &= ~((grp == CAPTURE) & (cap == -2))
        if ray.any():
            off = np.full(m, -1, dtype=np.int64)
            off[ray] = rays(b, fr[ray], to[ray])
            sel = off >= 0
            pol[sel] = ray_base + off[sel]
            paint[:m][sel, 1], paint[:m][sel, 2] = fr[sel], to[sel]
            sel &= (grp == CAPTURE) & (cap >= 0)
            paint[:m][sel, 3] = cap[sel]
        return seat, pol, paint, move_number, phase

    def values_for(self, game: Game) -> npt.NDArray[np.float32]:
        n = game.num_players
        vmp = np.zeros(4, dtype=np.float32)
        ranking = game.ranking
        if ranking is not None and sorted(ranking) == list(range(1, n + 1)):
            for k, s in enumerate(ranking):
                vmp[s - 1] = 1.0 - 2.0 * k / (n - 1)
        else:
            vmp[:n] = -1.0 / (n - 1)
            if game.winner is not None and 1 <= game.winner <= n:
                vmp[game.winner - 1] = 1.0
        return vmp

    def encode_game(self, game: Game, sample_every: int = 1) -> EncodedGame:
        out = self.encode_games([game], sample_every)
        out.game_index = None
        return out

    def encode_games(self, games: Sequence[Game], sample_every: int = 1) -> EncodedGame:
        """Encode a block of games of one config at once; rows carry ``game_index``."""
        if not games:
            raise EncoderError("encode_games needs at least one game")
        b = board_layout(games[0].board_type)
        n, hl = games[0].num_players, self.history_length
        if any(g.num_players != n or board_layout(g.board_type) is not b for g in games):
            raise EncoderError("encode_games: the games of a block must share board and player count")
        parts = [MoveColumns.of(g.moves) for g in games]
        counts = np.array([len(c) for c in parts], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        game_of = np.repeat(np.arange(len(games), dtype=np.int64), counts)
        local = np.arange(int(counts.sum()), dtype=np.int64) - starts[game_of]
        seat, pol, paint, move_number, phase = self._moves(b, parts, n)
        positions = np.flatnonzero(local % sample_every == 0)
        ok = pol[positions] >= 0
        skipped = {MALFORMED: int((~ok).sum())} if not ok.all() else {}
        pos = positions[ok]
        s = len(pos)
        mover = seat[pos]
        first = starts[game_of[pos]]  # each sample's game start: history never crosses games
        # hist[q, j, h]: index of seat q+1's h-th most recent move before sample j.
        none = len(seat)  # the "no move" row of paint
        hist = np.full((n, s, hl), none, dtype=np.int64)
        own = np.zeros(s, dtype=np.int64)
        for q in range(n):
            idx = np.flatnonzero(seat == q + 1)
            if not len(idx):
                continue
            cnt, base = np.searchsorted(idx, pos), np.searchsorted(idx, first)
            mine = mover == q + 1
            own[mine] = (cnt - base)[mine]
            for h in range(hl):
                j = cnt - 1 - h
                hist[q, :, h] = np.where(j >= base, idx[np.maximum(j, 0)], none)
        # Each move-history plane holds at most one cell: store its index (-1 = empty).
        # Slot r (0 = the mover) of sample j shows seat (mover - 1 + r) % n; column
        # t = r * hl + h of `hm` is that seat's h-th most recent move (len(seat) = none),
        # and planes 4t..4t+3 of the sample are that move's paint row.
        rows = np.arange(s)
        slots = min(n, SEAT_SLOTS)
        slot_seat = (mover[:, None] - 1 + np.arange(slots)) % n
        hm = hist[slot_seat[:, :, None], rows[:, None, None], np.arange(hl)].reshape(s, slots * hl)
        cells = np.full((s, self.num_planes), -1, dtype=np.int16)
        cells[:, : slots * hl * PLANES_PER_MOVE] = paint[hm].reshape(s, slots * hl * PLANES_PER_MOVE)
        glob = np.zeros((s, NUM_GLOBALS), dtype=np.float32)
        mpg = b.geo.moves_per_game
        move_numbers = move_number[pos]
        glob[:, 0] = np.minimum(move_numbers / (2.0 * mpg), 1.0)
        glob[rows, mover] = 1.0  # seats 1..4 -> columns 1..4
        glob[:, 5 + n - 2] = 1.0
        glob[rows, 8 + phase[pos]] = 1.0
        glob[:, 16] = np.minimum(own / mpg, 1.0)
        outcomes: dict[tuple[Any, ...], npt.NDArray[np.float32]] = {}  # few distinct outcomes per block
        rows_of: list[npt.NDArray[np.float32]] = []
        for g in games:
            o = (g.num_players, g.winner, None if g.ranking is None else tuple(g.ranking))
            v = outcomes.get(o)
            if v is None:
                v = outcomes[o] = self.values_for(g)
            rows_of.append(v)
        vmp = np.stack(rows_of)
        gi = game_of[pos]
        return EncodedGame(
            features=cells,
            globals=glob,
            values=vmp[gi, mover - 1] if s else np.zeros(0, dtype=np.float32),
            values_mp=vmp[gi],
            policy_index=pol[pos].astype(np.int32),
            move_numbers=move_numbers,
            player_to_move=mover.astype(np.int8),
            skipped=skipped,
            game_index=gi.astype(np.int32),
        )


@cache
def _phase_index(phase: str | None) -> int:
    try:
        return PHASES.index((phase or "").lower())
    except ValueError:
        return len(PHASES)


def check_encoder(obj: object, where: str) -> Encoder:
    """Raise :class:`EncoderError` unless ``obj`` satisfies the :class:`Encoder` protocol."""
    problems = []
    for attr, kind in (("name", str), ("version", int), ("num_planes", int), ("num_globals", int)):
        if not isinstance(getattr(obj, attr, None), kind):
            problems.append(f"attribute {attr!r} must be {kind.__name__}")
    for meth in ("policy_size", "encode_game"):
        if not callable(getattr(obj, meth, None)):
            problems.append(f"method {meth}() is missing")
    if problems:
        raise EncoderError(f"encoder {where} does not implement the encoder protocol: {'; '.join(problems)}")
    assert isinstance(obj, Encoder)
    return obj


def load_encoder(spec: str, history_length: int) -> Encoder:
    """``"builtin"`` or ``"package.module:Class"`` -> an encoder instance (``Class(history_length=N)``)."""
    if spec in ("builtin", ENCODER_NAME):
        return MoveHistoryEncoder(history_length)
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise EncoderError(f"export.encoder {spec!r}: expected 'builtin' or 'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # an import can fail in any way; report it, never crash the service
        raise EncoderError(f"export.encoder {spec!r}: cannot import module {module_name!r}: {e}") from e
    cls: Any = getattr(module, class_name, None)
    if not callable(cls):
        raise EncoderError(f"export.encoder {spec!r}: module {module_name!r} has no class {class_name!r}")
    factory: Callable[..., object] = cls
    try:
        obj = factory(history_length=history_length)
    except Exception as e:
        raise EncoderError(f"export.encoder {spec!r}: {class_name}(history_length=...) failed: {e}") from e
    return check_encoder(obj, repr(spec))
