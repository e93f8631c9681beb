"""Per-board policy layout of the built-in encoder, and its vectorised move rules.

``board_layout(board)`` fixes, once per board, what the encoder and its policy
index need: cell ordinals, the position -> cell map, ray directions and lengths.
``move_group`` and ``rays`` are the move rules the encoder applies to a whole
block of moves at once (see ``encoder.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from daemon.data.games import JsonPos, PosKey
from daemon.keys import BoardGeometry, geometry

PASS_TYPES = ("no_placement_action", "no_movement_action", "no_line_action", "no_territory_action")
SQUARE_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1))  # (dcol, drow)
HEX_DIRS = ((1, 0), (1, -1), (0, -1), (-1, 0), (-1, 1), (0, 1))  # cube (dx, dz) == (dcol, drow)

PLACEMENT, MOVEMENT, CAPTURE, OTHER, PASS = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class BoardLayout:
    geo: BoardGeometry
    cells: int
    dirs: int
    max_dist: int
    ordinal: npt.NDArray[np.int32]  # flat grid index -> cell ordinal (-1 off board)
    positions: dict[tuple[int, int, int | None], int]  # board position -> flat grid index
    cell_of: dict[PosKey, int]  # positions (as tuples and as JsonPos), and None (no position) -> -1
    dir_table: npt.NDArray[np.int64]  # [dcol + 1, drow + 1] -> direction index (-1 none)

    @property
    def policy_size(self) -> int:
        return 2 * self.cells + self.cells * self.dirs * self.max_dist + len(PASS_TYPES) + 1


@cache
def board_layout(board: str) -> BoardLayout:
    geo = geometry(board)
    mask = geo.mask.reshape(-1)
    ordinal = np.full(mask.shape[0], -1, dtype=np.int32)
    ordinal[mask] = np.arange(int(mask.sum()), dtype=np.int32)
    positions: dict[tuple[int, int, int | None], int] = {}
    for flat in np.flatnonzero(mask):
        row, col = divmod(int(flat), geo.grid)
        x, y, z = geo.from_grid(row, col)
        positions[(x, y, z)] = int(flat)
        if z is not None:
            positions[(x, y, None)] = int(flat)
    cell_of: dict[PosKey, int] = {None: -1}
    cell_of.update(positions.items())
    cell_of.update((JsonPos(*pos), flat) for pos, flat in positions.items())
    dirs = HEX_DIRS if geo.is_hex else SQUARE_DIRS
    table = np.full((3, 3), -1, dtype=np.int64)
    for i, (dc, dr) in enumerate(dirs):
        table[dc + 1, dr + 1] = i
    return BoardLayout(
        geo=geo,
        cells=int(mask.sum()),
        dirs=len(dirs),
        max_dist=2 * geo.radius if geo.is_hex else geo.grid - 1,
        ordinal=ordinal,
        positions=positions,
        cell_of=cell_of,
        dir_table=table,
    )


@cache
def move_group(move_type: str | None) -> int:
    t = (move_type or "").lower()
    if t.startswith("no_") or "skip" in t or t == "pass":
        return PASS
    if "place" in t:
        return PLACEMENT
    if "capture" in t:
        return CAPTURE
    if "move" in t:
        return MOVEMENT
    return OTHER


@cache
def pass_index(move_type: str | None) -> int:
    t = move_type or ""
    return PASS_TYPES.index(t) if t in PASS_TYPES else len(PASS_TYPES)


def seat_of(player: object, n: int) -> int:
    return player if type(player) is int and 1 <= player <= n else 0


def rays(b: BoardLayout, fr: npt.NDArray[np.int64], to: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Policy offsets within the ray section of moves from flat cell ``fr`` to ``to`` (-1: not a ray)."""
    g = b.geo.grid
    dr, dc = to // g - fr // g, to % g - fr % g
    if b.geo.is_hex:
        dist = np.maximum(np.maximum(np.abs(dc), np.abs(dr)), np.abs(dc + dr))
    else:
        dist = np.maximum(np.abs(dc), np.abs(dr))
    safe = np.maximum(dist, 1)
    straight = (dist > 0) & (dc % safe == 0) & (dr % safe == 0)
    ddc, ddr = np.clip(dc // safe, -1, 1), np.clip(dr // safe, -1, 1)
    d = np.where(straight, b.dir_table[ddc + 1, ddr + 1], -1)
    off = (b.ordinal[np.maximum(fr, 0)].astype(np.int64) * b.dirs + d) * b.max_dist + dist - 1
    return np.where(d >= 0, off, -1)
