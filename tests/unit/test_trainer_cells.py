"""Trainer side of the format-3 ``cells`` layout: helpers, loader equivalence, bad files, a real run."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.npz import cells_to_dense, dense_to_cells, open_training_file
from daemon.training.args import TrainerArgs
from daemon.training.exitcodes import ExitCode, TrainerError
from daemon.training.trainer import ddp
from daemon.training.trainer.data import BatchLoader, split_by_game, unpack_cells
from daemon.training.trainer.train import StopFlag, Trainer
from tests.support.npz_synth import write_synth_npz

REPO = Path(__file__).resolve().parents[2]
# (H, W): square8, square19, hex grid 25x25, a non-square one, a single cell.
GRIDS = [(8, 8), (19, 19), (25, 25), (3, 5), (1, 1)]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def _random_cells(seed: int, n: int, c: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells with ~30% empty planes, and a constant with a random mask in the last plane only."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, h * w, (n, c)).astype(np.int16)
    cells[rng.random((n, c)) < 0.3] = -1
    cells[:, -1] = -1
    constant = np.zeros((c, h, w), dtype=np.uint8)
    constant[-1] = rng.random((h, w)) < 0.7
    return cells, constant


# -- helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", GRIDS)
def test_cells_round_trip_and_contract(h: int, w: int) -> None:
    cells, constant = _random_cells(h * w, 11, 5, h, w)
    dense = cells_to_dense(cells, constant)
    assert dense.dtype == np.uint8 and dense.shape == (11, 5, h, w)
    # Contract: dense[n, c] = max(constant[c], onehot(cells[n, c])), cell f = row * W + col.
    for n in range(11):
        for p in range(5):
            expect = constant[p].copy()
            if cells[n, p] >= 0:
                expect[cells[n, p] // w, cells[n, p] % w] = 1
            np.testing.assert_array_equal(dense[n, p], expect)
    back_cells, back_constant = dense_to_cells(dense)
    assert back_cells.dtype == np.int16 and back_cells.shape == (11, 5)
    assert back_constant.dtype == np.uint8 and back_constant.shape == (5, h, w)
    np.testing.assert_array_equal(cells_to_dense(back_cells, back_constant), dense)
    if int(constant[-1].sum()) > 1:  # a mask with one cell is a (one-hot) cells plane
        np.testing.assert_array_equal(back_cells, cells)
        np.testing.assert_array_equal(back_constant, constant)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 5), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_cells_dense_cells_is_identity(h: int, w: int, n: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cells = rng.integers(-1, h * w, (n, c)).astype(np.int16)
    zero = np.zeros((c, h, w), dtype=np.uint8)
    got_cells, got_constant = dense_to_cells(cells_to_dense(cells, zero))
    np.testing.assert_array_equal(got_cells, cells)
    np.testing.assert_array_equal(got_constant, zero)


def test_dense_to_cells_refuses_what_the_layout_cannot_hold() -> None:
    with pytest.raises(ValueError, match="0/1"):
        dense_to_cells(np.full((1, 1, 2, 2), 2, dtype=np.uint8))
    two = np.zeros((2, 1, 2, 2), dtype=np.uint8)
    two[0, 0, 0] = 1  # two cells in sample 0, none in sample 1
    with pytest.raises(ValueError, match="not representable in the cells layout"):
        dense_to_cells(two)
    with pytest.raises(ValueError, match="must be"):
        dense_to_cells(np.zeros((2, 2, 2), dtype=np.uint8))


def test_cells_to_dense_refuses_bad_input() -> None:
    zero = np.zeros((2, 3, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"out of range \[-1, 9\)"):
        cells_to_dense(np.array([[0, 9]], dtype=np.int16), zero)
    with pytest.raises(ValueError, match="out of range"):
        cells_to_dense(np.array([[-2, 0]], dtype=np.int16), zero)
    with pytest.raises(ValueError, match="C = 3"):
        cells_to_dense(np.zeros((1, 3), dtype=np.int16), zero)
    with pytest.raises(ValueError, match="0/1"):
        cells_to_dense(np.zeros((1, 2), dtype=np.int16), zero + 2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("h, w", GRIDS)
def test_unpack_cells_equals_cells_to_dense(device: str, h: int, w: int) -> None:
    cells, constant = _random_cells(h + w, 9, 6, h, w)
    cells[0] = -1  # a sample with every plane empty: nothing may be set but the constant
    cells[1, :-1] = 0  # cell 0 really set, next to empty planes scattering into cell 0
    got = unpack_cells(torch.from_numpy(cells).to(device), torch.from_numpy(constant).to(device))
    assert got.device.type == device and got.dtype == torch.uint8 and got.shape == (9, 6, h, w)
    np.testing.assert_array_equal(got.cpu().numpy(), cells_to_dense(cells, constant))


def test_unpack_cells_refuses_bad_input() -> None:
    constant = torch.zeros((2, 3, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="int16"):
        unpack_cells(torch.zeros((1, 2), dtype=torch.int32), constant)
    with pytest.raises(ValueError, match="int16"):
        unpack_cells(torch.zeros((1, 2, 1), dtype=torch.int16), constant)
    with pytest.raises(ValueError, match="C = 3"):
        unpack_cells(torch.zeros((1, 3), dtype=torch.int16), constant)


# -- open_training_file and BatchLoader --------------------------------------------------------


def test_cells_file_is_memory_mapped_as_cells(tmp_path: Path) -> None:
    dense = open_training_file(write_synth_npz(tmp_path / "d.npz", 300))
    a = open_training_file(write_synth_npz(tmp_path / "c.npz", 300, layout="cells"))
    assert a.layout == "cells" and not a.packed and a.meta["format_version"] == 3
    assert isinstance(a.features, np.memmap) and a.features.shape == (300, 4) and a.features.dtype == np.int16
    assert a.input_shape == dense.input_shape == (4, 8, 8) and a.n == 300
    assert a.constant is not None and a.constant.shape == (4, 8, 8) and a.constant.dtype == np.uint8
    assert (a.constant[2] == 1).all() and not a.constant[[0, 1, 3]].any()  # plane 2 is all ones
    assert (np.asarray(a.features[:, 2]) == -1).all()
    assert dense.constant is None and dense.layout == "dense"
    np.testing.assert_array_equal(cells_to_dense(np.asarray(a.features), a.constant), dense.features)


def _batches(path: Path, *, shuffle: bool) -> list[dict[str, torch.Tensor]]:
    a = open_training_file(path)
    split = split_by_game(a.game_ids)
    loader = BatchLoader(a, split.train, 32, torch.device("cpu"), shuffle=shuffle, seed=3)
    return [vars(b) for b in loader.epoch(1)]


@pytest.mark.parametrize("grid", [8, 25])
@pytest.mark.parametrize("shuffle", [True, False])
def test_cells_packed_and_dense_files_give_identical_batches(
    tmp_path: Path, grid: int, shuffle: bool
) -> None:
    layouts: list[Any] = ["dense", "packbits", "cells"]
    paths = [write_synth_npz(tmp_path / f"{k}.npz", 700, grid=grid, layout=k) for k in layouts]
    runs = [_batches(path, shuffle=shuffle) for path in paths]
    ref = runs[0]
    assert ref and ref[0]["x"].dtype == torch.float32 and ref[0]["x"].shape[1:] == (4, grid, grid)
    for other in runs[1:]:
        assert len(other) == len(ref)
        for b_ref, b in zip(ref, other, strict=True):
            for name, t in b_ref.items():
                assert torch.equal(t, b[name]), name


def _cells_arrays(tmp: Path, n: int = 120) -> dict[str, np.ndarray]:
    src = write_synth_npz(tmp / "src.npz", n, layout="cells")
    with np.load(src, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def _write(path: Path, arrays: dict[str, Any], *, compressed: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for k, v in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(v), allow_pickle=False)
            method = zipfile.ZIP_DEFLATED if k in compressed else zipfile.ZIP_STORED
            zf.writestr(k + ".npy", buf.getvalue(), compress_type=method)
    return path


@pytest.mark.parametrize("bad", [64, -2, 32767, -32768])
def test_out_of_range_cell_is_bad_data_when_batches_are_read(tmp_path: Path, bad: int) -> None:
    arrays = _cells_arrays(tmp_path, 400)
    arrays["feature_cells"][397, 1] = bad
    path = _write(tmp_path / "oob.npz", arrays)
    a = open_training_file(path)  # opening does not read the cells
    loader = BatchLoader(a, np.arange(400), 16, torch.device("cpu"), shuffle=False)
    with pytest.raises(TrainerError) as err:
        for _ in loader.epoch(0):
            pass
    msg = err.value.message
    assert err.value.code == ExitCode.BAD_DATA and str(path) in msg
    assert "feature_cells value out of range [-1, 64)" in msg and str(bad) in msg, msg


Mutation = Callable[[dict[str, Any]], Any]


def _rename(old: str, new: str) -> Mutation:
    return lambda a: a.update({new: a.pop(old)})


BAD_CELLS: list[tuple[Mutation, str]] = [
    (lambda a: a.update(feature_cells=a["feature_cells"].astype(np.int32)), "feature_cells dtype int32"),
    (lambda a: a.update(feature_cells=a["feature_cells"].astype(np.uint16)), "(int16 expected)"),
    (lambda a: a.update(feature_cells=a["feature_cells"][:, :, None]), "feature_cells must be (N, C), got"),
    (lambda a: a.update(feature_cells=a["feature_cells"][:, 0]), "feature_cells must be (N, C), got (120,)"),
    (lambda a: a.update(feature_cells=a["feature_cells"][:0]), "empty"),
    (lambda a: a.update(feature_cells=a["feature_cells"][:, :0]), "empty"),
    (lambda a: a.pop("feature_constant"), "missing arrays: feature_constant (feature_layout='cells')"),
    (lambda a: a.pop("feature_cells"), "missing arrays: feature_cells"),
    (_rename("feature_cells", "features_packed"), "missing arrays: feature_cells (feature_layout='cells')"),
    (lambda a: a.pop("feature_layout"), "feature_cells needs the metadata feature_layout='cells'"),
    (lambda a: a.update(feature_layout=np.array("rle")), "expected one of 'dense', 'packbits', 'cells'"),
    (lambda a: a.update(feature_constant=np.ones((4, 8, 9), np.uint8)), "= (4, 8, 8) for feature_height=8"),
    (lambda a: a.update(feature_constant=np.ones((4, 64), np.uint8)), "feature_constant must be (C, H, W)"),
    (
        lambda a: a.update(feature_constant=np.ones((5, 8, 8), np.uint8)),
        "has 5 planes but feature_cells has 4",
    ),
    (lambda a: a.update(feature_constant=a["feature_constant"] * 2), "feature_constant values must be 0/1"),
    (
        lambda a: a.update(feature_constant=a["feature_constant"].astype(np.int16)),
        "feature_constant dtype int16",
    ),
    (
        lambda a: a.update(feature_height=np.array(9), feature_width=np.array(9)),
        "(4, 9, 9) for feature_height=9",
    ),
    (lambda a: a.update(feature_height=np.array(9)), "feature_height=9 != feature_width=8"),
    (lambda a: a.pop("feature_width"), "'feature_width' missing"),
    (lambda a: a.update(num_planes=np.array(5)), "num_planes=5 but features have 4 planes"),
]


@pytest.mark.parametrize("mutate, match", BAD_CELLS)
def test_bad_cells_files_are_bad_data(tmp_path: Path, mutate: Mutation, match: str) -> None:
    arrays = _cells_arrays(tmp_path)
    mutate(arrays)
    path = _write(tmp_path / "bad.npz", arrays)
    before = hashlib.sha256(path.read_bytes()).digest()
    with pytest.raises(TrainerError) as err:
        open_training_file(path)
    assert err.value.code == ExitCode.BAD_DATA and str(path) in err.value.message
    assert match in err.value.message, err.value.message
    assert hashlib.sha256(path.read_bytes()).digest() == before


def test_compressed_constant_is_bad_data(tmp_path: Path) -> None:
    path = _write(tmp_path / "z.npz", _cells_arrays(tmp_path), compressed=("feature_constant",))
    with pytest.raises(TrainerError, match=r"'feature_constant\.npy' is compressed") as err:
        open_training_file(path)
    assert err.value.code == ExitCode.BAD_DATA


# Found by the corrupted-file fuzz on cells files: zipfile raises RuntimeError / NotImplementedError
# for a flipped encryption flag, compression method or "version needed" in the central directory.
@pytest.mark.parametrize("offset, value", [(8, 1), (10, 1), (10, 99), (6, 0xFF)])
def test_corrupt_central_directory_fields_are_bad_data(tmp_path: Path, offset: int, value: int) -> None:
    good = bytearray(write_synth_npz(tmp_path / "g.npz", 64, layout="cells").read_bytes())
    central = good.index(b"PK\x01\x02")  # first central directory record
    struct.pack_into("<H", good, central + offset, value)
    path = tmp_path / "x.npz"
    path.write_bytes(bytes(good))
    with pytest.raises(TrainerError) as err:
        open_training_file(path)
    assert err.value.code == ExitCode.BAD_DATA and str(path) in err.value.message


# -- training ---------------------------------------------------------------------------------


def test_trainer_setup_and_epoch_on_cells_hex_sized_grid(tmp_path: Path) -> None:
    data = write_synth_npz(tmp_path / "hex.npz", 240, grid=25, layout="cells")
    cfg = TrainerArgs(
        data=data, out=tmp_path / "o", epochs=1, batch_size=32, device="cpu", channels=8, blocks=1
    )
    trainer = Trainer(cfg, info=ddp.DistInfo(), emit=lambda _e: None, stop=StopFlag())
    trainer.setup()
    assert trainer.arch.in_planes == 4 and trainer.arch.grid == 25
    loss, seen, _ = trainer.train_epoch(1)
    assert seen == len(trainer.split.train) and np.isfinite(loss)


def _train(data: Path, out: Path) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "daemon.training", "--data", str(data), "--out", str(out)]
    cmd += ["--epochs", "3", "--batch-size", "64", "--device", "cpu"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False)
    return p, [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def test_real_training_run_on_cells_file(tmp_path: Path) -> None:
    data = write_synth_npz(tmp_path / "square8_2p.npz", 1600, layout="cells")
    out = tmp_path / "run"
    p, events = _train(data, out)
    assert p.returncode == ExitCode.OK, p.stderr
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 3 and epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert events[-1]["event"] == "done"
    assert events[-1]["val_policy_accuracy"] > events[-1]["baseline_policy_accuracy"]
    meta = torch.load(out / "model.pt", weights_only=True)["metadata"]
    assert meta["input_shape"] == [4, 8, 8] and meta["architecture"]["in_planes"] == 4


def test_training_on_out_of_range_cells_exits_bad_data(tmp_path: Path) -> None:
    arrays = _cells_arrays(tmp_path, 400)
    arrays["feature_cells"][:, 0] = 64  # every row: whichever split reads first finds it
    data = _write(tmp_path / "oob.npz", arrays)
    p, events = _train(data, tmp_path / "run")
    assert p.returncode == ExitCode.BAD_DATA, p.stderr
    assert events[-1]["event"] == "error" and events[-1]["code"] == "BAD_DATA"
    assert str(data) in events[-1]["message"] and "out of range" in events[-1]["message"]
