"""An encoded block -> the NPZ's row arrays: checked against the encoder protocol, game ids hashed.

Shared by the serial export (``job.py``) and the worker processes (``workers.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.export.encoder import EncodedGame, Encoder
from daemon.npz import format as fmt
from daemon.npz.format import ArraySpec


class RowsError(Exception):
    """An encoder's output that breaks the protocol (names the encoder and the game)."""


def game_id_hash(game_id: str) -> int:
    """Signed int64 from the first 8 bytes (big-endian) of sha256(game_id)."""
    return int.from_bytes(hashlib.sha256(game_id.encode()).digest()[:8], "big", signed=True)


def check_encoded(
    encoder: Encoder, enc: Any, specs: Mapping[str, ArraySpec], policy_size: int, gid: str, cells: int
) -> None:
    where = f"encoder {encoder.name!r} v{encoder.version}, game {gid}"
    f = getattr(enc, "features", None)
    spec = next(iter(specs.values()))  # the feature array comes first
    if not isinstance(f, np.ndarray) or f.dtype != spec.dtype or f.shape[1:] != spec.row_shape:
        got = (getattr(f, "dtype", None), getattr(f, "shape", None))
        raise RowsError(f"{where}: features must be {spec.dtype} rows of {spec.row_shape}, got {got}")
    if fmt.FEATURE_CELLS in specs and f.size and (int(f.min()) < -1 or int(f.max()) >= cells):
        raise RowsError(f"{where}: feature_cells outside [-1, {cells})")
    p = enc.policy_index
    if len(p) and (int(p.min()) < 0 or int(p.max()) >= policy_size):
        raise RowsError(f"{where}: policy_index outside [0, {policy_size})")


def row_arrays(feature_key: str, game_ids: Sequence[str], enc: EncodedGame) -> dict[str, npt.NDArray[Any]]:
    """The NPZ's row arrays of one encoded block (``game_ids`` in the block's game order)."""
    hashes = np.array([game_id_hash(g) for g in game_ids], dtype=np.int64)
    gi = enc.game_index if enc.game_index is not None else np.zeros(len(enc.policy_index), np.int32)
    return {
        feature_key: enc.features,
        fmt.GLOBALS: enc.globals,
        fmt.VALUES: enc.values,
        fmt.VALUES_MP: enc.values_mp,
        fmt.POLICY_INDEX: enc.policy_index,
        fmt.GAME_IDS: hashes[gi],
        fmt.MOVE_NUMBERS: enc.move_numbers,
        fmt.PLAYER_TO_MOVE: enc.player_to_move,
    }
