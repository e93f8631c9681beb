"""The export file format: names and versions (:mod:`~daemon.npz.format`), the three feature
layouts (:mod:`~daemon.npz.layouts`), the streaming writer and the memory-mapping reader."""

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
    "TrainingArrays",
    "cells_to_dense",
    "dense_to_cells",
    "open_training_file",
    "pack_features",
    "packed_width",
    "unpack_features",
]
