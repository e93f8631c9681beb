"""Synthetic training NPZ in the CONTRACTS.md export format, with a planted learnable policy.

Owned by the trainer helper. Each sample: the mover's last 'to' cell ``c`` is set in
plane 0, the opponent's in plane 1, plane 2 is the board mask, plane 3 random
noise. Policy target = ``(c + 9) % cells`` (``noise`` share uniformly random);
value = +1 for the mover when ``c`` is in the top half, else -1. Samples come in
games of ``game_len`` consecutive rows with real-looking sha256-derived game ids.

``layout="packbits"`` writes the format-2 bit-packed layout (``features_packed`` +
``feature_layout``/``feature_height``/``feature_width``) of the same planes and
``layout="cells"`` the format-3 cell-index layout (``feature_cells`` for the one-hot
planes 0, 1, 3 + ``feature_constant`` holding the all-ones plane 2); the default stays
the format-1 dense file the older tests expect.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from daemon.npz import dense_to_cells, pack_features


def game_hash(game_id: str) -> int:
    return int.from_bytes(hashlib.sha256(game_id.encode()).digest()[:8], "big", signed=True)


def synth_arrays(
    n: int, *, grid: int = 8, seed: int = 0, noise: float = 0.2, game_len: int = 20, num_globals: int = 6
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cells = grid * grid
    feats = np.zeros((n, 4, grid, grid), dtype=np.uint8)
    c = rng.integers(0, cells, n)
    opp = rng.integers(0, cells, n)
    rows = np.arange(n)
    feats[rows, 0, c // grid, c % grid] = 1
    feats[rows, 1, opp // grid, opp % grid] = 1
    feats[:, 2] = 1
    junk = rng.integers(0, cells, n)
    feats[rows, 3, junk // grid, junk % grid] = 1
    target = (c + 9) % cells
    flip = rng.random(n) < noise
    target[flip] = rng.integers(0, cells, int(flip.sum()))
    player = (rows % 2 + 1).astype(np.int8)
    v = np.where(c < cells // 2, 1.0, -1.0).astype(np.float32)
    values_mp = np.zeros((n, 4), dtype=np.float32)
    values_mp[rows, player - 1] = v
    values_mp[rows, 2 - player] = -v
    glob = np.zeros((n, num_globals), dtype=np.float32)
    glob[:, 0] = (rows % game_len) / game_len
    glob[rows, 1 + (player - 1) % max(1, num_globals - 1)] = 1.0
    gids = np.array([game_hash(f"synthetic-game-{seed}-{i // game_len}") for i in rows], dtype=np.int64)
    return {
        "features": feats,
        "globals": glob,
        "values": v,
        "values_mp": values_mp,
        "policy_index": target.astype(np.int32),
        "game_ids": gids,
        "move_numbers": (rows % game_len).astype(np.int32),
        "player_to_move": player,
    }


def write_synth_npz(
    path: Path,
    n: int = 3000,
    *,
    grid: int = 8,
    seed: int = 0,
    layout: Literal["dense", "packbits", "cells"] = "dense",
    format_version: int | None = None,
    **kw: float,
) -> Path:
    """Write ``n`` samples to ``path`` (ZIP_STORED members, like the export).

    ``format_version`` defaults to 1 for dense (no layout metadata), 2 for packbits and 3
    for cells; dense with ``format_version=2`` adds ``feature_layout="dense"`` and the grid size.
    """
    arrays = synth_arrays(n, grid=grid, seed=seed, **kw)  # type: ignore[arg-type]
    version = format_version if format_version is not None else {"packbits": 2, "cells": 3}.get(layout, 1)
    if layout == "packbits":
        arrays["features_packed"] = pack_features(arrays.pop("features"))
    elif layout == "cells":
        arrays["feature_cells"], arrays["feature_constant"] = dense_to_cells(arrays.pop("features"))
    cells = grid * grid
    layout_meta = {
        "feature_layout": np.array(layout),
        "feature_height": np.array(grid),
        "feature_width": np.array(grid),
    }
    meta = {
        "board_type": np.array("square8"),
        "config_key": np.array("square8_2p"),
        "num_players": np.array(2),
        "encoder_name": np.array("synthetic"),
        "encoder_version": np.array(1),
        "history_length": np.array(1),
        "policy_size": np.array(cells * 2),
        "num_planes": np.array(4),
        "num_globals": np.array(arrays["globals"].shape[1]),
        "source_snapshot": np.array(json.dumps({"synthetic": True})),
        "export_params": np.array(json.dumps({"seed": seed})),
        "created_at": np.array("2025-01-01T00:00:00+00:00"),
        "format_version": np.array(version),
        **(layout_meta if version >= 2 else {}),
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in {**arrays, **meta}.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)
    return path
