"""The three feature layouts of a training NPZ, as numpy helpers (torch-free).

Every layout stores 0/1 planes that the model sees as dense (N, C, H, W):

* ``dense``: the planes themselves.
* ``packbits``: ``np.packbits`` of each flattened plane, (N, C, ceil(H*W/8)) uint8.
* ``cells``: one int16 flat cell index ``row * W + col`` per plane, (N, C), -1 for an
  empty plane, plus ``constant`` (C, H, W) uint8 planes OR'ed into every sample:
  ``dense[n, c] = max(constant[c], onehot(cells[n, c]))``.

The trainer unpacks the stored layouts per batch on its device (``data.unpack_bits``,
``data.unpack_cells``); these helpers are the reference and the writers' tools.
"""

from __future__ import annotations

import numpy as np

from daemon.npz.format import LAYOUT_CELLS, LAYOUT_PACKBITS, packed_width

_INT16_CELLS = 1 << 15  # cells 0 .. 32767 fit an int16 index


def _check_binary(dense: np.ndarray, layout: str) -> None:
    if dense.ndim != 4:
        raise ValueError(f"dense features must be (N, C, H, W), got {dense.shape}")
    if dense.size and not np.isin(dense, (0, 1)).all():  # both layouts would turn 2 into 1 silently
        raise ValueError(f"the {layout} layout holds 0/1 planes only")


def pack_features(dense: np.ndarray) -> np.ndarray:
    """Dense 0/1 planes (N, C, H, W) -> the ``packbits`` layout (N, C, ceil(H*W/8)) uint8."""
    _check_binary(dense, LAYOUT_PACKBITS)
    n, c, h, w = dense.shape
    return np.packbits(np.asarray(dense, dtype=np.uint8).reshape(n, c, h * w), axis=-1)


def unpack_features(packed: np.ndarray, height: int, width: int) -> np.ndarray:
    """The ``packbits`` layout (N, C, ceil(H*W/8)) uint8 -> dense 0/1 planes (N, C, H, W) uint8."""
    if packed.dtype != np.uint8 or packed.ndim != 3:
        raise ValueError(f"packed features must be uint8 (N, C, P), got {packed.dtype} {packed.shape}")
    if packed.shape[2] != packed_width(height, width):
        raise ValueError(f"{packed.shape[2]} bytes per plane, expected {packed_width(height, width)}")
    n, c, _ = packed.shape
    dense = np.unpackbits(packed, axis=-1, count=height * width)
    return dense.reshape(n, c, height, width)


def cells_to_dense(cells: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """The ``cells`` layout (N, C) + constant (C, H, W) -> dense 0/1 planes (N, C, H, W) uint8."""
    if cells.ndim != 2 or not np.issubdtype(cells.dtype, np.integer):
        raise ValueError(f"cells must be integer (N, C), got {cells.dtype} {cells.shape}")
    if constant.ndim != 3 or constant.shape[0] != cells.shape[1]:
        raise ValueError(f"constant must be (C, H, W) with C = {cells.shape[1]}, got {constant.shape}")
    if constant.size and not np.isin(constant, (0, 1)).all():
        raise ValueError("constant planes must be 0/1")
    n, c = cells.shape
    _, h, w = constant.shape
    idx = np.asarray(cells, dtype=np.int64)
    if idx.size and (int(idx.min()) < -1 or int(idx.max()) >= h * w):
        raise ValueError(f"cell index out of range [-1, {h * w}): min {idx.min()}, max {idx.max()}")
    flat = np.zeros((n, c, h * w + 1), dtype=np.uint8)  # the extra last cell soaks up the -1s
    np.put_along_axis(flat, np.where(idx < 0, h * w, idx)[..., None], 1, axis=-1)
    dense = flat[..., : h * w].reshape(n, c, h, w)
    return np.maximum(dense, np.asarray(constant, dtype=np.uint8)[None])


def dense_to_cells(dense: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense 0/1 planes (N, C, H, W) -> ``(cells, constant)`` of the ``cells`` layout.

    A plane with at most one set cell in every sample goes to ``cells`` (its constant
    plane stays zero); otherwise a plane identical in every sample goes to ``constant``
    (its cells are -1); any other plane raises ValueError.
    """
    _check_binary(dense, LAYOUT_CELLS)
    n, c, h, w = dense.shape
    if h * w > _INT16_CELLS:
        raise ValueError(f"{h}x{w} = {h * w} cells: int16 indices cover at most {_INT16_CELLS}")
    flat = np.asarray(dense, dtype=np.uint8).reshape(n, c, h * w)
    count = flat.sum(axis=-1, dtype=np.int64)  # (N, C)
    one_hot = (count <= 1).all(axis=0)  # (C,)
    cells = np.where(count == 1, flat.argmax(axis=-1), -1).astype(np.int16)
    cells[:, ~one_hot] = -1
    constant = np.zeros((c, h, w), dtype=np.uint8)
    for p in np.flatnonzero(~one_hot):
        if not (flat[:, p] == flat[:1, p]).all():
            raise ValueError(
                f"plane {p} has several set cells and differs between samples: "
                "not representable in the cells layout"
            )
        constant[p] = flat[0, p].reshape(h, w)
    return cells, constant
