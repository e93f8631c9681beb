"""Synthetic self-play DB -> lead's export -> real trainer: beats the majority-class baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from daemon.export.job import run_export
from daemon.selfplay_sim import write_games
from daemon.settings import settings_from_mapping
from daemon.training.exitcodes import ExitCode

REPO = Path(__file__).resolve().parents[2]


def test_trainer_learns_on_exported_selfplay_data(tmp_path: Path) -> None:
    db = tmp_path / "games.db"
    write_games(db, "square8_2p", 60, seed=1)
    settings = settings_from_mapping({"data_dir": str(tmp_path / "data"), "game_dbs": [str(db)]}, {})
    result = run_export(settings, "square8_2p", db_paths=[db])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "daemon.training",
        "--data",
        str(result.output),
        "--out",
        str(tmp_path / "o"),
        "--epochs",
        "4",
        "--batch-size",
        "64",
        "--device",
        "cpu",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=100, check=False)
    assert p.returncode == ExitCode.OK, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    done = events[-1]
    assert done["val_policy_accuracy"] > done["baseline_policy_accuracy"] + 0.2
