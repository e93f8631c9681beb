"""Any layout -> dense planes: :func:`load_dense` for scripts, :func:`rewrite_layout` for the export.

The ``dense`` layout is the one a trainer outside this project reads with plain
``numpy.load(path, allow_pickle=False)["features"]``: uint8 (N, C, H, W). The export writes
its encoder's layout and, when ``export.feature_layout`` asks for another one, rewrites the
file here block by block (memory stays bounded by the block, not the file), atomically
(the writer's temp + fsync + rename).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.npz import format as fmt
from daemon.npz.format import FEATURE_MEMBER, FORMAT_VERSION, LAYOUT_CELLS, LAYOUT_DENSE, LAYOUT_PACKBITS
from daemon.npz.layouts import cells_to_dense, pack_features, unpack_features
from daemon.npz.reader import TrainingArrays, _memmap, _read_headers, open_training_file
from daemon.npz.writer import NpzStreamWriter, sha256_file

# Rows per rewritten block: hexagonal (49 x 24 x 24 planes) is ~28 KB a row, ~115 MB a block.
BLOCK_ROWS = 4096


class LayoutError(ValueError):
    """A layout that cannot be produced from this file (names the file and the layouts)."""


def dense_rows(a: TrainingArrays, lo: int, hi: int) -> npt.NDArray[np.uint8]:
    """Rows ``lo:hi`` of an opened file as dense uint8 (n, C, H, W), whatever its layout."""
    _, h, w = a.input_shape
    if a.layout == LAYOUT_CELLS:
        assert a.constant is not None  # the reader always reads it for cells
        return cells_to_dense(np.asarray(a.features[lo:hi]), a.constant)
    if a.layout == LAYOUT_PACKBITS:
        return unpack_features(np.asarray(a.features[lo:hi]), h, w)
    rows = np.asarray(a.features[lo:hi])
    if rows.dtype != np.uint8:
        raise LayoutError(f"{a.path}: dense features are {rows.dtype}, not uint8 planes")
    return rows


def load_dense(path: Path | str) -> npt.NDArray[np.uint8]:
    """The file's features as dense uint8 planes (N, C, H, W), from any of the three layouts."""
    a = open_training_file(Path(path))
    if a.legacy:
        raise LayoutError(f"{path}: a legacy (pickled) file; open it with open_training_file")
    return dense_rows(a, 0, a.n)


def _move_numbers(path: Path) -> npt.NDArray[Any] | None:
    with zipfile.ZipFile(path) as zf:
        members = _read_headers(path, zf)
    m = members.get(fmt.MOVE_NUMBERS)
    return _memmap(path, m) if m is not None else None


def rewrite_layout(path: Path, layout: str, *, min_free_bytes: int = 0) -> tuple[int, str]:
    """Rewrite ``path`` in ``layout`` (dense or packbits; cells only when it already is);
    return (bytes, sha256) of the file now at ``path``."""
    path = Path(path)
    a = open_training_file(path)
    if a.layout == layout:
        return path.stat().st_size, sha256_file(path)
    if layout not in (LAYOUT_DENSE, LAYOUT_PACKBITS):
        raise LayoutError(f"{path}: the {layout} layout comes only from an encoder that writes it")
    c, h, w = a.input_shape
    specs = fmt.row_specs(layout, c, a.num_globals, h)
    moves = _move_numbers(path)
    rows = {
        fmt.GLOBALS: a.globals,
        fmt.VALUES: a.values,
        fmt.VALUES_MP: a.values_mp,
        fmt.POLICY_INDEX: a.policy_index,
        fmt.GAME_IDS: a.game_ids,
        fmt.MOVE_NUMBERS: moves if moves is not None else np.zeros(a.n, np.int32),
        fmt.PLAYER_TO_MOVE: a.player_to_move,
    }
    writer = NpzStreamWriter(path, specs, min_free_bytes=min_free_bytes)
    writer.start(a.n)
    try:
        for lo in range(0, a.n, BLOCK_ROWS):
            hi = min(a.n, lo + BLOCK_ROWS)
            dense = dense_rows(a, lo, hi)
            feats = dense if layout == LAYOUT_DENSE else pack_features(dense)
            writer.append({FEATURE_MEMBER[layout]: feats, **{k: v[lo:hi] for k, v in rows.items()}})
        meta = dict(a.meta)
        meta.update(
            {
                fmt.META_FEATURE_LAYOUT: layout,
                fmt.META_FEATURE_HEIGHT: h,
                fmt.META_FEATURE_WIDTH: w,
                fmt.META_FORMAT_VERSION: FORMAT_VERSION,
            }
        )
        return writer.finish(meta)
    except BaseException:
        writer.abort()
        raise
