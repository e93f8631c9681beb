"""The real trainer program (``python -m daemon.training``) on real files, as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from daemon.training.exitcodes import ExitCode
from tests.support.npz_synth import write_synth_npz

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def _train(*args: str | Path, timeout: float = 100) -> tuple[int, list[dict[str, Any]], str]:
    cmd = [sys.executable, "-m", "daemon.training", *map(str, args)]
    p = subprocess.run(
        cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=timeout, check=False
    )
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return p.returncode, events, p.stderr


def test_trainer_really_learns(tmp_path: Path) -> None:
    data = write_synth_npz(tmp_path / "square8_2p.npz", 2400)
    out = tmp_path / "run"
    rc, events, err = _train(
        "--data",
        data,
        "--out",
        out,
        "--epochs",
        "4",
        "--batch-size",
        "64",
        "--fencing-token",
        "17",
        "--data-hash",
        "abc123",
        "--run-id",
        "r1",
        "--device",
        "cpu",
    )
    assert rc == ExitCode.OK, err
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 4
    assert epochs[-1]["train_loss"] < 0.7 * epochs[0]["train_loss"]
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    done = events[-1]
    assert done["event"] == "done" and done["interrupted"] is False
    assert done["val_policy_accuracy"] > done["baseline_policy_accuracy"] + 0.3
    ckpt = torch.load(out / "model.pt", weights_only=True)
    meta = ckpt["metadata"]
    assert ckpt["format_version"] == 1
    assert meta["fencing_token"] == 17 and meta["data_hash"] == "abc123" and meta["run_id"] == "r1"
    assert meta["architecture"] == {
        "channels": 32,
        "blocks": 2,
        "in_planes": 4,
        "num_globals": 6,
        "policy_size": 128,
        "grid": 8,
    }
    assert meta["input_shape"] == [4, 8, 8] and meta["config_key"] == "square8_2p"
    assert [x["epoch"] for x in meta["losses"]] == [1, 2, 3, 4]
    assert not list(out.glob(".*tmp"))
    # warm start from it: same shapes fine; other width refused with INIT_MISMATCH
    rc, events, _ = _train(
        "--data",
        data,
        "--out",
        tmp_path / "child",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--init",
        out / "model.pt",
        "--device",
        "cpu",
    )
    assert rc == ExitCode.OK
    rc, events, _ = _train(
        "--data",
        data,
        "--out",
        tmp_path / "bad",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--init",
        out / "model.pt",
        "--channels",
        "8",
    )
    assert rc == ExitCode.INIT_MISMATCH and events[-1]["code"] == "INIT_MISMATCH"
    assert "channels" in events[-1]["message"] and not (tmp_path / "bad" / "model.pt").exists()


def test_legacy_file_needs_flag_then_trains_one_epoch(legacy_npz: Path, tmp_path: Path) -> None:
    rc, events, err = _train(
        "--data", legacy_npz, "--out", tmp_path / "a", "--epochs", "1", "--batch-size", "256"
    )
    assert rc == ExitCode.BAD_DATA
    assert events[-1]["code"] == "BAD_DATA" and "--allow-legacy-pickle" in events[-1]["message"]
    assert "pickle" in err and not (tmp_path / "a").exists()
    rc, events, err = _train(
        "--data",
        legacy_npz,
        "--out",
        tmp_path / "b",
        "--epochs",
        "1",
        "--batch-size",
        "256",
        "--allow-legacy-pickle",
        "--channels",
        "16",
        "--blocks",
        "1",
    )
    assert rc == ExitCode.OK, err
    assert events[0]["legacy"] is True and events[-1]["event"] == "done"
    meta = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["metadata"]
    assert meta["input_shape"] == [40, 8, 8] and meta["epochs"] == 1


def test_corrupt_npz_is_bad_data(tmp_path: Path) -> None:
    data = write_synth_npz(tmp_path / "d.npz", 200)
    data.write_bytes(data.read_bytes()[:5000])
    rc, events, _ = _train("--data", data, "--out", tmp_path / "o", "--epochs", "1", "--batch-size", "32")
    assert rc == ExitCode.BAD_DATA
    assert events[-1]["code"] == "BAD_DATA" and str(data) in events[-1]["message"]


def test_nan_loss_is_diverged_without_checkpoint(tmp_path: Path) -> None:
    data = write_synth_npz(tmp_path / "d.npz", 300)
    rc, events, _ = _train(
        "--data",
        data,
        "--out",
        tmp_path / "o",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--debug-nan-at-step",
        "3",
    )
    assert rc == ExitCode.DIVERGED and events[-1]["code"] == "DIVERGED"
    assert not (tmp_path / "o" / "model.pt").exists()


def test_bad_args(tmp_path: Path) -> None:
    rc, _, _ = _train("--data", tmp_path / "x.npz", "--out", tmp_path, "--epochs", "0", "--batch-size", "8")
    assert rc == ExitCode.BAD_ARGS


def test_sigterm_mid_epoch_saves_and_exits_interrupted(tmp_path: Path) -> None:
    data = write_synth_npz(tmp_path / "d.npz", 4000)
    out = tmp_path / "o"
    cmd = [
        sys.executable,
        "-m",
        "daemon.training",
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "50",
        "--batch-size",
        "4",
        "--heartbeat-interval",
        "0.2",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # first heartbeat == mid-epoch
            if json.loads(line)["event"] == "heartbeat":
                break
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.INTERRUPTED
    done = json.loads(rest.strip().splitlines()[-1])
    assert done["event"] == "done" and done["interrupted"] is True and done["epochs"] == 0
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert ckpt["metadata"]["interrupted"] is True


@pytest.mark.parametrize("flag", ["--help"])
def test_help_does_not_mention_debug_flag(flag: str) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "daemon.training", flag],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO,
        check=False,
    )
    assert p.returncode == 0 and "--allow-legacy-pickle" in p.stdout and "debug-nan" not in p.stdout
