"""Trainer side of the format-2 ``packbits`` layout: helpers, loader equivalence, bad files, a real run."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from daemon.npz import (
    open_training_file,
    pack_features,
    packed_width,
    unpack_features,
)
from daemon.training.args import TrainerArgs
from daemon.training.exitcodes import ExitCode, TrainerError
from daemon.training.trainer import ddp
from daemon.training.trainer.data import BatchLoader, split_by_game, unpack_bits
from daemon.training.trainer.train import StopFlag, Trainer
from tests.support.npz_synth import write_synth_npz

REPO = Path(__file__).resolve().parents[2]
# (H, W): square8, square19, hex grid 25x25 (625 cells: not a multiple of 8), a non-square one.
GRIDS = [(8, 8), (19, 19), (25, 25), (3, 5)]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


# -- helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("h, w", GRIDS)
def test_pack_features_is_np_packbits_and_round_trips(h: int, w: int) -> None:
    dense = (np.random.default_rng(h * w).random((7, 3, h, w)) < 0.4).astype(np.uint8)
    packed = pack_features(dense)
    assert packed.dtype == np.uint8 and packed.shape == (7, 3, packed_width(h, w)) == (7, 3, -(-h * w // 8))
    np.testing.assert_array_equal(packed, np.packbits(dense.reshape(7, 3, h * w), axis=-1))
    # Contract: cell (r, c) -> f = r*W + c -> bit 7 - f % 8 of byte f // 8.
    r, c = h - 1, w - 1
    f = r * w + c
    one = np.zeros((1, 1, h, w), dtype=np.uint8)
    one[0, 0, r, c] = 1
    assert pack_features(one)[0, 0, f // 8] == 1 << (7 - f % 8)
    np.testing.assert_array_equal(unpack_features(packed, h, w), dense)


def test_pack_features_refuses_non_binary_planes() -> None:
    with pytest.raises(ValueError, match="0/1"):
        pack_features(np.full((1, 1, 2, 2), 2, dtype=np.uint8))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("h, w", GRIDS)
def test_unpack_bits_equals_np_unpackbits(device: str, h: int, w: int) -> None:
    # Random bytes, padding bits included: they must be dropped, not leak into the planes.
    packed = np.random.default_rng(h + w).integers(0, 256, (9, 5, packed_width(h, w)), dtype=np.uint8)
    expect = np.unpackbits(packed, axis=-1, count=h * w).reshape(9, 5, h, w)
    got = unpack_bits(torch.from_numpy(packed).to(device), h, w)
    assert got.device.type == device and got.dtype == torch.uint8 and got.shape == (9, 5, h, w)
    np.testing.assert_array_equal(got.cpu().numpy(), expect)
    np.testing.assert_array_equal(unpack_features(packed, h, w), expect)


def test_unpack_helpers_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="expected 8"):
        unpack_bits(torch.zeros((1, 1, 7), dtype=torch.uint8), 8, 8)
    with pytest.raises(ValueError, match="uint8"):
        unpack_bits(torch.zeros((1, 1, 8), dtype=torch.int16), 8, 8)
    with pytest.raises(ValueError, match="expected 79"):
        unpack_features(np.zeros((1, 1, 78), dtype=np.uint8), 25, 25)


# -- open_training_file and BatchLoader --------------------------------------------------------


def test_packed_file_is_memory_mapped_packed(tmp_path: Path) -> None:
    dense = open_training_file(write_synth_npz(tmp_path / "d.npz", 300))
    packed = open_training_file(write_synth_npz(tmp_path / "p.npz", 300, layout="packbits"))
    assert not dense.packed and dense.layout == "dense"
    assert packed.packed and packed.layout == "packbits" and packed.meta["format_version"] == 2
    assert isinstance(packed.features, np.memmap) and packed.features.shape == (300, 4, 8)
    assert packed.input_shape == dense.input_shape == (4, 8, 8) and packed.n == 300
    np.testing.assert_array_equal(unpack_features(np.asarray(packed.features), 8, 8), dense.features)


def test_dense_format2_file_opens_as_dense(tmp_path: Path) -> None:
    a = open_training_file(write_synth_npz(tmp_path / "d2.npz", 100, format_version=2))
    assert not a.packed and a.meta["feature_layout"] == "dense" and a.input_shape == (4, 8, 8)


def _batches(path: Path, *, shuffle: bool) -> list[dict[str, torch.Tensor]]:
    a = open_training_file(path)
    split = split_by_game(a.game_ids)
    loader = BatchLoader(a, split.train, 32, torch.device("cpu"), shuffle=shuffle, seed=3)
    return [vars(b) for b in loader.epoch(1)]


@pytest.mark.parametrize("grid", [8, 25])
@pytest.mark.parametrize("shuffle", [True, False])
def test_packed_and_dense_files_give_identical_batches(tmp_path: Path, grid: int, shuffle: bool) -> None:
    kinds: list[dict[str, Any]] = [{}, {"format_version": 2}, {"layout": "packbits"}]
    runs = [
        _batches(write_synth_npz(tmp_path / f"{i}.npz", 700, grid=grid, **kw), shuffle=shuffle)
        for i, kw in enumerate(kinds)
    ]
    ref = runs[0]
    assert ref and ref[0]["x"].dtype == torch.float32 and ref[0]["x"].shape[1:] == (4, grid, grid)
    for other in runs[1:]:
        assert len(other) == len(ref)
        for b_ref, b in zip(ref, other, strict=True):
            for name, t in b_ref.items():
                assert torch.equal(t, b[name]), name


def test_trainer_setup_and_epoch_on_packed_hex_sized_grid(tmp_path: Path) -> None:
    data = write_synth_npz(tmp_path / "hex.npz", 240, grid=25, layout="packbits")
    cfg = TrainerArgs(
        data=data, out=tmp_path / "o", epochs=1, batch_size=32, device="cpu", channels=8, blocks=1
    )
    trainer = Trainer(cfg, info=ddp.DistInfo(), emit=lambda _e: None, stop=StopFlag())
    trainer.setup()
    assert trainer.arch.in_planes == 4 and trainer.arch.grid == 25
    loss, seen, _ = trainer.train_epoch(1)
    assert seen == len(trainer.split.train) and np.isfinite(loss)


def test_real_training_run_on_packed_file(tmp_path: Path) -> None:
    data = write_synth_npz(tmp_path / "square8_2p.npz", 1600, layout="packbits")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "daemon.training", "--data", str(data), "--out", str(out)]
    cmd += ["--epochs", "3", "--batch-size", "64", "--device", "cpu"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False)
    assert p.returncode == ExitCode.OK, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 3 and epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert events[-1]["event"] == "done"
    assert events[-1]["val_policy_accuracy"] > events[-1]["baseline_policy_accuracy"]
    meta = torch.load(out / "model.pt", weights_only=True)["metadata"]
    assert meta["input_shape"] == [4, 8, 8] and meta["architecture"]["in_planes"] == 4


# -- bad packed files -----------------------------------------------------------------------


def _packed_arrays(tmp: Path) -> dict[str, np.ndarray]:
    src = write_synth_npz(tmp / "src.npz", 120, layout="packbits")
    with np.load(src, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def _write(path: Path, arrays: dict[str, Any]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for k, v in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(v), allow_pickle=False)
            zf.writestr(k + ".npy", buf.getvalue())
    return path


def _rename_features(a: dict[str, Any]) -> None:
    a["features"] = a.pop("features_packed")


Mutation = Callable[[dict[str, Any]], Any]
BAD_PACKED: list[tuple[Mutation, str]] = [
    (lambda a: a.update(features_packed=a["features_packed"][:, :, :-1]), "7 bytes per plane, expected"),
    (lambda a: a.update(features_packed=np.zeros((120, 4, 9), np.uint8)), "ceil(8*8/8) = 8"),
    (lambda a: a.pop("feature_height"), "'feature_height' missing"),
    (lambda a: a.update(feature_width=np.array(0)), "'feature_width' missing or not a positive integer"),
    (lambda a: a.update(feature_height=np.array("8")), "'feature_height' missing or not a positive"),
    (lambda a: a.update(feature_height=np.array(True)), "feature_height"),
    (lambda a: a.update(features_packed=a["features_packed"].astype(np.int16)), "dtype int16"),
    (lambda a: a.update(features_packed=a["features_packed"][:, 0]), "features_packed must be (N, C, "),
    (lambda a: a.update(features_packed=a["features_packed"][:, :, :, None]), "features_packed must be"),
    (lambda a: a.update(num_planes=np.array(5)), "num_planes=5 but features have 4 planes"),
    (lambda a: a.update(feature_height=np.array(4), feature_width=np.array(16)), "square grids"),
    (lambda a: a.pop("features_packed"), "missing arrays: features (or features_packed)"),
    (_rename_features, "missing arrays: features_packed (feature_layout='packbits')"),
    (lambda a: a.update(feature_layout=np.array("rle")), "unknown feature_layout 'rle'"),
    (lambda a: a.update(features_packed=a["features_packed"][:0]), "empty"),
]


@pytest.mark.parametrize("mutate, match", BAD_PACKED)
def test_bad_packed_files_are_bad_data(tmp_path: Path, mutate: Mutation, match: str) -> None:
    arrays = _packed_arrays(tmp_path)
    mutate(arrays)
    path = _write(tmp_path / "bad.npz", arrays)
    before = hashlib.sha256(path.read_bytes()).digest()
    with pytest.raises(TrainerError) as err:
        open_training_file(path)
    assert err.value.code == ExitCode.BAD_DATA and str(path) in err.value.message
    assert match in err.value.message, err.value.message
    assert hashlib.sha256(path.read_bytes()).digest() == before


def test_format1_packed_member_without_layout_metadata_is_bad_data(tmp_path: Path) -> None:
    path = write_synth_npz(tmp_path / "p1.npz", 50, layout="packbits", format_version=1)
    with pytest.raises(TrainerError, match="'feature_height' missing") as err:
        open_training_file(path)
    assert err.value.code == ExitCode.BAD_DATA


def test_dense_layout_metadata_must_match_the_array(tmp_path: Path) -> None:
    src = write_synth_npz(tmp_path / "d.npz", 60, format_version=2)
    with np.load(src, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["feature_width"] = np.array(9)
    with pytest.raises(TrainerError, match="feature_width=9 but features are") as err:
        open_training_file(_write(tmp_path / "bad.npz", arrays))
    assert err.value.code == ExitCode.BAD_DATA
