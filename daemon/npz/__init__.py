"""The export file format: names and versions (:mod:`~daemon.npz.format`), the three feature
layouts (:mod:`~daemon.npz.layouts`), the streaming writer and the memory-mapping reader."""

from daemon.npz.dense import LayoutError, load_dense, rewrite_layout
from daemon.npz.format import (
    FORMAT_VERSION,
    LAYOUT_CELLS,
    LAYOUT_DENSE,
    LAYOUT_PACKBITS,
    LAYOUTS,
    packed_width,
)
from daemon.npz.layouts import cells_to_dense, dense_to_cells, pack_features, unpack_features
from daemon.npz.reader import LEGACY_GAME_BLOCK, TrainingArrays, open_training_file

__all__ = [
    "FORMAT_VERSION",
    "LAYOUTS",
    "LAYOUT_CELLS",
    "LAYOUT_DENSE",
    "LAYOUT_PACKBITS",
    "LEGACY_GAME_BLOCK",
    "LayoutError",
    "TrainingArrays",
    "cells_to_dense",
    "dense_to_cells",
    "load_dense",
    "open_training_file",
    "pack_features",
    "packed_width",
    "rewrite_layout",
    "unpack_features",
]
