"""The first (per-game, dense) implementation of the built-in encoder, kept as a reference.

The shipped encoder (``daemon.export.encoder``) encodes many games at once and
writes bit-packed planes; tests check that it gives exactly these planes,
policies, globals and values for the same games.
"""

# ruff: noqa
from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt

from daemon.export.encoder import (
    CAPTURE,
    ENCODER_NAME,
    ENCODER_VERSION,
    HEX_DIRS,
    MALFORMED,
    NUM_GLOBALS,
    OTHER,
    PASS,
    PASS_TYPES,
    PHASES,
    PLACEMENT,
    PLANES_PER_MOVE,
    SEAT_SLOTS,
    SQUARE_DIRS,
    EncodedGame,
    BoardLayout as _Board,
    board_layout,
    move_group,
)
from daemon.data.gamedb import Game, Move


def _cell(b: _Board, pos: tuple[int, int, int | None] | None) -> int:
    """Flat grid index of ``pos``; -1 when absent, -2 when off the board."""
    if pos is None:
        return -1
    flat = b.positions.get(pos)
    return -2 if flat is None else flat


def _ray(b: _Board, f: int, t: int) -> int:
    """Policy offset of the ray from flat cell ``f`` to ``t`` within the ray section, or -1."""
    g = b.geo.grid
    fr, fc = divmod(f, g)
    tr, tc = divmod(t, g)
    dr, dc = tr - fr, tc - fc
    dist = max(abs(dc), abs(dr), abs(dc + dr)) if b.geo.is_hex else max(abs(dc), abs(dr))
    if dist == 0 or dc % dist or dr % dist:
        return -1
    dirs = HEX_DIRS if b.geo.is_hex else SQUARE_DIRS
    d = {v: i for i, v in enumerate(dirs)}.get((dc // dist, dr // dist))
    if d is None:
        return -1
    return (int(b.ordinal[f]) * b.dirs + d) * b.max_dist + dist - 1


class ReferenceEncoder:
    """The built-in encoder (see the module docstring for the exact layout)."""

    name = ENCODER_NAME
    version = ENCODER_VERSION
    num_globals = NUM_GLOBALS

    def __init__(self, history_length: int = 4) -> None:
        if history_length < 1:
            raise EncoderError(f"history_length must be >= 1 (got {history_length})")
        self.history_length = history_length
        self.num_planes = SEAT_SLOTS * history_length * PLANES_PER_MOVE + 1

    def policy_size(self, board: str) -> int:
        return board_layout(normalize_board(board)).policy_size

    def _moves(self, b: _Board, moves: list[Move], n: int) -> tuple[npt.NDArray[np.int64], ...]:
        """Per move: seat, policy index (-1 = malformed / not a sample), 3 paint (plane, cell) pairs."""
        m = len(moves)
        seat = np.zeros(m, dtype=np.int64)
        pol = np.full(m, -1, dtype=np.int64)
        pk = np.full((m, 3), -1, dtype=np.int64)
        pc = np.zeros((m, 3), dtype=np.int64)
        ray_base = b.cells
        other_base = b.cells + b.cells * b.dirs * b.max_dist
        pass_base = other_base + b.cells
        ordinal = b.ordinal
        for i, mv in enumerate(moves):
            if not (1 <= mv.player <= n) or not mv.valid:
                continue
            seat[i] = mv.player
            grp = move_group(mv.move_type)
            if grp == PASS:
                t = mv.move_type or ""
                pol[i] = pass_base + (PASS_TYPES.index(t) if t in PASS_TYPES else len(PASS_TYPES))
                continue
            to = _cell(b, mv.to_pos)
            if grp == PLACEMENT:
                if to >= 0:
                    pol[i], pk[i, 0], pc[i, 0] = int(ordinal[to]), 0, to
            elif grp == OTHER:
                at = to if mv.to_pos is not None else _cell(b, mv.from_pos)
                if at >= 0:
                    pol[i], pk[i, 0], pc[i, 0] = other_base + int(ordinal[at]), 2, at
            else:
                fr = _cell(b, mv.from_pos)
                cap = _cell(b, mv.capture_target) if grp == CAPTURE else -1
                if fr < 0 or to < 0 or cap == -2:
                    continue
                off = _ray(b, fr, to)
                if off < 0:
                    continue
                pol[i] = ray_base + off
                pk[i, 0], pc[i, 0], pk[i, 1], pc[i, 1] = 1, fr, 2, to
                if cap >= 0:
                    pk[i, 2], pc[i, 2] = 3, cap
        return seat, pol, pk, pc

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
        b = board_layout(game.board_type)
        n, hl, g = game.num_players, self.history_length, b.geo.grid
        moves = game.moves
        seat, pol, pk, pc = self._moves(b, moves, n)
        positions = np.arange(0, len(moves), sample_every, dtype=np.int64)
        ok = pol[positions] >= 0
        skipped = {MALFORMED: int((~ok).sum())} if not ok.all() else {}
        pos = positions[ok]
        s = len(pos)
        mover = seat[pos]
        # hist[q, j, h]: index of seat q+1's h-th most recent move before sample j (-1 = none).
        hist = np.full((n, s, hl), -1, dtype=np.int64)
        own = np.zeros(s, dtype=np.int64)
        for q in range(n):
            idx = np.flatnonzero(seat == q + 1)
            cnt = np.searchsorted(idx, pos)
            own[mover == q + 1] = cnt[mover == q + 1]
            for h in range(hl):
                j = cnt - 1 - h
                hist[q, :, h] = np.where(j >= 0, idx[np.maximum(j, 0)] if len(idx) else -1, -1)
        feats = np.zeros((s, self.num_planes, g * g), dtype=np.uint8)
        rows = np.arange(s)
        for r in range(min(n, SEAT_SLOTS)):
            seat_of = (mover - 1 + r) % n
            for h in range(hl):
                m = hist[seat_of, rows, h]  # (s,)
                have = m >= 0
                mm = np.where(have, m, 0)
                k = pk[mm]  # (s, 3)
                valid = (k >= 0) & have[:, None]
                sj, e = np.nonzero(valid)
                plane = (r * hl + h) * PLANES_PER_MOVE + k[sj, e]
                feats[sj, plane, pc[mm[sj], e]] = 1
        feats[:, -1, :] = b.geo.mask.reshape(-1)
        glob = np.zeros((s, NUM_GLOBALS), dtype=np.float32)
        mpg = b.geo.moves_per_game
        move_numbers = np.fromiter((moves[int(i)].move_number for i in pos), dtype=np.int32, count=s)
        glob[:, 0] = np.minimum(move_numbers / (2.0 * mpg), 1.0)
        glob[rows, mover] = 1.0  # seats 1..4 -> columns 1..4
        glob[:, 5 + n - 2] = 1.0
        phase_col = np.fromiter((_phase_index(moves[int(i)].phase) for i in pos), dtype=np.int64, count=s)
        glob[rows, 8 + phase_col] = 1.0
        glob[:, 16] = np.minimum(own / mpg, 1.0)
        vmp = self.values_for(game)
        return EncodedGame(
            features=feats.reshape(s, self.num_planes, g, g),
            globals=glob,
            values=vmp[mover - 1] if s else np.zeros(0, dtype=np.float32),
            values_mp=np.repeat(vmp[None, :], s, axis=0),
            policy_index=pol[pos].astype(np.int32),
            move_numbers=move_numbers,
            player_to_move=mover.astype(np.int8),
            skipped=skipped,
        )


@cache
def _phase_index(phase: str | None) -> int:
    try:
        return PHASES.index((phase or "").lower())
    except ValueError:
        return len(PHASES)
