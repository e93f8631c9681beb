"""The export side of DESIGN 10: one cache for scripts, the CLI and the service; the dense layout."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from daemon.api import ExportCache, TrainingTriggers, get_optimized_pipeline
from daemon.api.sync import run_sync
from daemon.export.job import run_export
from daemon.npz import load_dense, rewrite_layout
from daemon.npz.reader import open_training_file
from daemon.selfplay_sim import write_games
from daemon.settings import Settings, settings_from_mapping

REPO = Path(__file__).resolve().parents[2]
KEY = "square8_2p"


def settings(root: Path, **export: object) -> Settings:
    return settings_from_mapping(
        {
            "data_dir": str(root / "data"),
            "game_dbs": [str(root / "data" / "games" / "*.db")],
            "configs": [KEY],
            "export": {"workers": 1, **export},
        }
    )


@pytest.fixture
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's directory (the working directory): data/games/selfplay.db with square8_2p games."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "games").mkdir(parents=True)
    write_games(tmp_path / "data" / "games" / "selfplay.db", KEY, 60, seed=3)
    return tmp_path


def test_relative_and_absolute_paths_name_one_cache_entry(user: Path) -> None:
    s = settings(user)
    service = run_export(s, KEY)  # the service/CLI way: configured sources, absolute paths
    assert not service.cache_hit
    cache = ExportCache(settings=s)
    rel_db, rel_out = ["data/games/selfplay.db"], "data/training/square8_2p.npz"
    hit = cache.needs_export(db_paths=rel_db, output_path=rel_out, board_type="square8", num_players=2)
    assert not hit, hit.reason  # the script's relative spelling finds the service's entry
    abs_db = [str(user / "data" / "games" / "selfplay.db")]
    assert not cache.needs_export(abs_db, user / "data/training/../training/square8_2p.npz", "square8", 2)
    # The document's record_export (samples_exported only): parameters default to the exporter's.
    cache.record_export(
        db_paths=rel_db, output_path=rel_out, board_type="square8", num_players=2, samples_exported=500000
    )
    entries, _ = cache.load()
    assert list(entries) == [f"{KEY}|{user / 'data' / 'training' / 'square8_2p.npz'}"]
    assert run_export(s, KEY).cache_hit  # and the service still hits the script's record
    assert cache.needs_export(rel_db, rel_out, "square8", 2, force=True).reason == "forced (force=True)"
    # Another layout is another export.
    dense = ExportCache(settings=settings(user, feature_layout="dense"))
    miss = dense.needs_export(rel_db, rel_out, "square8", 2)
    assert miss and "feature_layout 'cells' -> 'dense'" in miss.reason


def test_new_games_invalidate_the_scripts_check(user: Path) -> None:
    s = settings(user)
    run_export(s, KEY)
    cache = ExportCache(settings=s)
    write_games(user / "data" / "games" / "selfplay.db", KEY, 5, seed=4)
    miss = cache.needs_export(["data/games/selfplay.db"], "data/training/square8_2p.npz", "square8", 2)
    assert miss and "source changed" in miss.reason


def test_dense_layout_loads_with_plain_numpy_and_trains(user: Path, tmp_path: Path) -> None:
    cells = run_export(settings(user), KEY, output=user / "cells.npz")
    dense = run_export(settings(user, feature_layout="dense"), KEY, output=user / "dense.npz")
    assert dense.samples == cells.samples > 0
    with np.load(dense.output, allow_pickle=False) as z:
        features = z["features"]
        assert str(z["feature_layout"]) == "dense"
        n = len(z["policy_index"])
    assert features.dtype == np.uint8 and features.ndim == 4 and features.shape[0] == n
    assert features.shape[2:] == (8, 8)
    assert np.array_equal(features, load_dense(cells.output))  # the same planes as the cells file
    a = open_training_file(dense.output)
    assert a.layout == "dense" and a.input_shape == features.shape[1:]
    # The recorded digest is the file's (the registry checks it).
    assert dense.sha256 == hashlib.sha256(dense.output.read_bytes()).hexdigest()
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "daemon.training", "--data", str(dense.output), "--out", str(out)]
    cmd += ["--epochs", "1", "--batch-size", "64", "--device", "cpu"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "model.pt").is_file()


def test_load_dense_expands_every_layout(user: Path) -> None:
    cells = run_export(settings(user), KEY, output=user / "c.npz").output
    want = load_dense(cells)
    assert want.dtype == np.uint8 and set(np.unique(want)) <= {0, 1}
    packed = user / "p.npz"
    packed.write_bytes(cells.read_bytes())
    rewrite_layout(packed, "packbits")
    assert open_training_file(packed).layout == "packbits"
    assert np.array_equal(load_dense(packed), want)
    with pytest.raises(ValueError, match="cells layout comes only"):
        rewrite_layout(packed, "cells")


async def test_sync_face_works_inside_a_running_loop(user: Path) -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert run_sync(answer()) == 42  # this test's own loop is running: a worker thread runs it
    triggers = TrainingTriggers(settings=settings(user))  # reads `status` through run_sync
    decision = triggers.should_train(KEY)
    usable = triggers.get_state(KEY).games_count
    assert 0 < usable < 100 and f"{usable} usable games < 100 to bootstrap" in decision.reason
    with get_optimized_pipeline(settings(user)) as pipeline:
        status = pipeline.get_status()
        assert status.health_status == "healthy"
        assert status.available_features["lock_backend"] == "file"
        assert status.as_dict()["health_status"] == "healthy"
