"""Trainer data layer: memory-mapped NPZ, legacy opt-in, bad data, split by game."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from daemon.npz import LEGACY_GAME_BLOCK, open_training_file
from daemon.training.exitcodes import ExitCode, TrainerError, exit_name
from daemon.training.trainer.data import split_by_game
from tests.support.npz_synth import synth_arrays, write_synth_npz


def test_members_are_memory_mapped_and_equal_numpy_load(tmp_path: Path) -> None:
    path = write_synth_npz(tmp_path / "d.npz", 300)
    a = open_training_file(path)
    assert isinstance(a.features, np.memmap) and a.features.dtype == np.uint8 and not a.packed
    assert a.n == 300 and a.input_shape == (4, 8, 8) and a.meta["policy_size"] == 128
    with np.load(path, allow_pickle=False) as ref:
        for name in ("features", "globals", "values_mp", "policy_index", "game_ids"):
            np.testing.assert_array_equal(np.asarray(getattr(a, name)), ref[name])


def test_legacy_file_refused_without_flag_with_clear_message(legacy_npz: Path) -> None:
    with pytest.raises(TrainerError) as err:
        open_training_file(legacy_npz)
    assert err.value.code == ExitCode.BAD_DATA
    msg = str(err.value)
    assert str(legacy_npz) in msg and "--allow-legacy-pickle" in msg and "object arrays" in msg


def test_legacy_file_converted_with_flag(legacy_npz: Path) -> None:
    a = open_training_file(legacy_npz, allow_legacy_pickle=True)
    assert a.legacy and a.n == 3912 and a.input_shape == (40, 8, 8) and a.num_globals == 10
    assert a.meta["num_players"] == 2
    np.testing.assert_allclose(a.values_mp[:, 0], -a.values_mp[:, 1])
    assert (a.policy_index == -1).sum() == 408  # samples with an empty policy
    assert a.policy_index.max() < a.meta["policy_size"]
    assert a.game_ids[LEGACY_GAME_BLOCK - 1] == 0 and a.game_ids[LEGACY_GAME_BLOCK] == 1


def test_compressed_members_refused(tmp_path: Path) -> None:
    arrays = synth_arrays(50)
    path = tmp_path / "c.npz"
    np.savez_compressed(path, **arrays, policy_size=np.array(128), num_players=np.array(2))
    with pytest.raises(TrainerError, match="compressed") as err:
        open_training_file(path)
    assert err.value.code == ExitCode.BAD_DATA


@pytest.mark.parametrize("damage", ["truncate", "garbage", "short_member"])
def test_corrupt_files_are_bad_data_naming_the_file(tmp_path: Path, damage: str) -> None:
    path = write_synth_npz(tmp_path / "x.npz", 200)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip" * 100)
    else:  # a stored member whose header promises more rows than it holds
        arrays = synth_arrays(200)
        with zipfile.ZipFile(path, "w") as zf:
            for name, arr in arrays.items():
                with zf.open(name + ".npy", "w") as fh:
                    np.lib.format.write_array(fh, arr)
            with zf.open("policy_size.npy", "w") as fh:
                np.lib.format.write_array(fh, np.array(128))
            with zf.open("num_players.npy", "w") as fh:
                np.lib.format.write_array(fh, np.array(2))
        blob = bytearray(path.read_bytes())
        i = blob.find(b"'shape': (200,")
        blob[i : i + 14] = b"'shape': (900,"
        path.write_bytes(bytes(blob))
    with pytest.raises(TrainerError) as err:
        open_training_file(path)
    assert err.value.code == ExitCode.BAD_DATA and str(path) in str(err.value)


def test_out_of_range_policy_is_bad_data(tmp_path: Path) -> None:
    path = tmp_path / "p.npz"
    arrays = synth_arrays(40)
    arrays["policy_index"][3] = 500
    np.savez(path, **arrays, policy_size=np.array(128), num_players=np.array(2))
    with pytest.raises(TrainerError, match="policy_index out of range"):
        open_training_file(path)


def test_split_is_by_game_and_deterministic() -> None:
    gids = synth_arrays(2000)["game_ids"]
    s1, s2 = split_by_game(gids), split_by_game(gids)
    np.testing.assert_array_equal(s1.val, s2.val)
    assert not set(gids[s1.train]) & set(gids[s1.val])
    assert 0 < len(s1.val) < len(gids) // 3
    one_game = split_by_game(np.zeros(10, dtype=np.int64))
    assert one_game.val_is_train


def test_exit_names() -> None:
    assert exit_name(3) == "BAD_DATA" and exit_name(-9) == "SIGKILL" and exit_name(77) == "EXIT_77"
