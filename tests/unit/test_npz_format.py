"""The writer, the reader and the export agree on every name of :mod:`daemon.npz.format`."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from daemon.npz import format as fmt
from daemon.npz import open_training_file
from daemon.npz.writer import NpzStreamWriter

GRID, PLANES, GLOBALS, N = 8, 5, 3, 40


def _rows(layout: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    specs = fmt.row_specs(layout, PLANES, GLOBALS, GRID)
    out: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        shape = (N, *spec.row_shape)
        if name == fmt.FEATURE_CELLS:
            out[name] = rng.integers(-1, GRID * GRID, shape).astype(spec.dtype)
        elif name in (fmt.FEATURES, fmt.FEATURES_PACKED):
            out[name] = rng.integers(0, 2 if name == fmt.FEATURES else 256, shape).astype(spec.dtype)
        elif name == fmt.POLICY_INDEX:
            out[name] = rng.integers(0, 100, shape).astype(spec.dtype)
        elif name == fmt.PLAYER_TO_MOVE:
            out[name] = rng.integers(1, 3, shape).astype(spec.dtype)
        else:
            out[name] = (
                rng.random(shape).astype(spec.dtype)
                if spec.dtype.kind == "f"
                else np.arange(N, dtype=spec.dtype).reshape(shape)
            )
    return out


@pytest.mark.parametrize("layout", fmt.LAYOUTS)
def test_writer_and_reader_agree(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(1)
    specs = fmt.row_specs(layout, PLANES, GLOBALS, GRID)
    assert next(iter(specs)) == fmt.FEATURE_MEMBER[layout]  # features come first
    assert set(fmt.ROW_MEMBERS) | {fmt.FEATURE_MEMBER[layout]} == set(specs)
    rows = _rows(layout, rng)
    out = tmp_path / f"{layout}.npz"
    w = NpzStreamWriter(out, specs)
    w.start(N)
    w.append(rows)
    meta = {
        fmt.META_FORMAT_VERSION: fmt.FORMAT_VERSION,
        fmt.META_FEATURE_LAYOUT: layout,
        fmt.META_FEATURE_HEIGHT: GRID,
        fmt.META_FEATURE_WIDTH: GRID,
        fmt.META_NUM_PLANES: PLANES,
        fmt.META_NUM_GLOBALS: GLOBALS,
        fmt.META_POLICY_SIZE: 100,
        fmt.META_NUM_PLAYERS: 2,
        fmt.META_BOARD_TYPE: "square8",
        fmt.META_CONFIG_KEY: "square8_2p",
    }
    constant = np.zeros((PLANES, GRID, GRID), np.uint8)
    w.finish(meta, {fmt.FEATURE_CONSTANT: constant} if layout == fmt.LAYOUT_CELLS else None)

    names = {n.removesuffix(".npy") for n in zipfile.ZipFile(out).namelist()}
    expected = set(specs) | set(meta) | ({fmt.FEATURE_CONSTANT} if layout == fmt.LAYOUT_CELLS else set())
    assert names == expected
    a = open_training_file(out)
    assert a.layout == layout and a.n == N and a.input_shape == (PLANES, GRID, GRID)
    np.testing.assert_array_equal(np.asarray(a.features), rows[fmt.FEATURE_MEMBER[layout]])
    for name in fmt.REQUIRED_ROW_MEMBERS:
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), rows[name])
    assert {k: a.meta[k] for k in meta} == meta
    # plain numpy reads the same members (no pickle)
    with np.load(out, allow_pickle=False) as d:
        assert set(d.files) == expected


def test_reader_names_a_missing_member(tmp_path: Path) -> None:
    """Each required member is required by name: drop one and the reader says which."""
    rng = np.random.default_rng(2)
    for missing in fmt.REQUIRED_ROW_MEMBERS:
        specs = {
            k: v for k, v in fmt.row_specs(fmt.LAYOUT_DENSE, PLANES, GLOBALS, GRID).items() if k != missing
        }
        rows = {k: v for k, v in _rows(fmt.LAYOUT_DENSE, rng).items() if k in specs}
        out = tmp_path / f"no-{missing}.npz"
        w = NpzStreamWriter(out, specs)
        w.start(N)
        w.append(rows)
        w.finish({fmt.META_POLICY_SIZE: 100, fmt.META_NUM_PLAYERS: 2})
        with pytest.raises(Exception, match=f"missing arrays: {missing}"):
            open_training_file(out)
