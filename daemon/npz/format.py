"""The training file's format, written once: versions, layouts, member and metadata names, row specs.

The export's writer, the trainer's reader and the layout helpers all import these names, so a
member can only be renamed here (a test checks that what the writer writes is what the reader
reads). DESIGN 6 describes the file; README "Export file and encoder" documents each member.

Versions: 1 dense ``features`` only; 2 adds ``packbits`` (``features_packed`` and the
``feature_layout`` / ``feature_height`` / ``feature_width`` scalars); 3 adds ``cells``
(``feature_cells`` + ``feature_constant``). The reader reads all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT_VERSION = 3

LAYOUT_DENSE, LAYOUT_PACKBITS, LAYOUT_CELLS = "dense", "packbits", "cells"
LAYOUTS = (LAYOUT_DENSE, LAYOUT_PACKBITS, LAYOUT_CELLS)

# -- members: one row per sample ------------------------------------------------------------
FEATURES = "features"  # dense: (N, C, H, W) uint8
FEATURES_PACKED = "features_packed"  # packbits: (N, C, ceil(H*W/8)) uint8
FEATURE_CELLS = "feature_cells"  # cells: (N, C) int16, -1 = empty plane
FEATURE_MEMBER = {LAYOUT_DENSE: FEATURES, LAYOUT_PACKBITS: FEATURES_PACKED, LAYOUT_CELLS: FEATURE_CELLS}
GLOBALS = "globals"  # (N, G) float32
VALUES = "values"  # (N,) float32, the mover's value
VALUES_MP = "values_mp"  # (N, 4) float32, per seat
POLICY_INDEX = "policy_index"  # (N,) int32, -1 = no target
GAME_IDS = "game_ids"  # (N,) int64 hash of the game id (split by game, lineage)
MOVE_NUMBERS = "move_numbers"  # (N,) int32
PLAYER_TO_MOVE = "player_to_move"  # (N,) int8 seat 1..4
# The row members every file has besides the features (the reader requires all but move_numbers).
ROW_MEMBERS = (GLOBALS, VALUES, VALUES_MP, POLICY_INDEX, GAME_IDS, MOVE_NUMBERS, PLAYER_TO_MOVE)
REQUIRED_ROW_MEMBERS = (GLOBALS, VALUES, VALUES_MP, POLICY_INDEX, GAME_IDS, PLAYER_TO_MOVE)

# -- whole arrays ---------------------------------------------------------------------------
FEATURE_CONSTANT = "feature_constant"  # cells: (C, H, W) uint8 0/1 planes OR'ed into every sample

# -- scalar metadata ------------------------------------------------------------------------
META_FORMAT_VERSION = "format_version"
META_FEATURE_LAYOUT = "feature_layout"
META_FEATURE_HEIGHT = "feature_height"
META_FEATURE_WIDTH = "feature_width"
META_NUM_PLANES = "num_planes"
META_NUM_GLOBALS = "num_globals"
META_POLICY_SIZE = "policy_size"
META_NUM_PLAYERS = "num_players"
META_BOARD_TYPE = "board_type"
META_CONFIG_KEY = "config_key"

NUM_SEATS = 4  # values_mp columns


@dataclass(frozen=True)
class ArraySpec:
    """One row member: its dtype and the shape of one row."""

    dtype: np.dtype[Any]
    row_shape: tuple[int, ...]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize


def packed_width(height: int, width: int) -> int:
    """Bytes per packed plane: ceil(H*W/8)."""
    return -(-(height * width) // 8)


def row_specs(layout: str, num_planes: int, num_globals: int, grid: int) -> dict[str, ArraySpec]:
    """Every row member of a file in ``layout`` (features first), as the writer stores them."""
    if layout == LAYOUT_CELLS:
        feats = ArraySpec(np.dtype(np.int16), (num_planes,))
    elif layout == LAYOUT_PACKBITS:
        feats = ArraySpec(np.dtype(np.uint8), (num_planes, packed_width(grid, grid)))
    elif layout == LAYOUT_DENSE:
        feats = ArraySpec(np.dtype(np.uint8), (num_planes, grid, grid))
    else:
        raise ValueError(f"unknown feature layout {layout!r} (expected one of {', '.join(LAYOUTS)})")
    return {
        FEATURE_MEMBER[layout]: feats,
        GLOBALS: ArraySpec(np.dtype(np.float32), (num_globals,)),
        VALUES: ArraySpec(np.dtype(np.float32), ()),
        VALUES_MP: ArraySpec(np.dtype(np.float32), (NUM_SEATS,)),
        POLICY_INDEX: ArraySpec(np.dtype(np.int32), ()),
        GAME_IDS: ArraySpec(np.dtype(np.int64), ()),
        MOVE_NUMBERS: ArraySpec(np.dtype(np.int32), ()),
        PLAYER_TO_MOVE: ArraySpec(np.dtype(np.int8), ()),
    }
