"""The GPU-readiness knobs through the real trainer program on CPU (``python -m daemon.training``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from daemon.training.exitcodes import ExitCode
from tests.support.npz_synth import write_synth_npz

REPO = Path(__file__).resolve().parents[2]


def _train(*args: str | Path) -> tuple[int, list[dict[str, Any]], str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "daemon.training", *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=100, check=False)
    return p.returncode, [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")], p.stderr


def test_knobs_reach_the_run_and_the_events(tmp_path: Path) -> None:
    data = write_synth_npz(tmp_path / "d.npz", 600, layout="cells")
    out = tmp_path / "o"
    rc, events, err = _train(
        "--data", data, "--out", out, "--epochs", "2", "--batch-size", "16", "--device", "cpu",
        "--channels", "8", "--blocks", "1", "--amp", "bf16", "--channels-last", "--prefetch", "0",
        "--sync-every", "3", "--threads", "1",
    )  # fmt: skip
    assert rc == ExitCode.OK, err
    start = events[0]
    assert start["event"] == "start" and start["amp"] == "bf16" and start["channels_last"] is True
    assert (start["prefetch"], start["threads"], start["compile"]) == (0, 1, False)
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 2 and all(e["epoch_seconds"] > 0 and e["samples_per_second"] > 0 for e in epochs)
    done = events[-1]
    assert done["event"] == "done" and done["checkpoint_bytes"] == (out / "model.pt").stat().st_size
    assert done["peak_gpu_memory_bytes"] is None  # CPU
    state = torch.load(out / "model.pt", weights_only=True)["model_state"]
    assert all(v.is_contiguous() and v.dtype != torch.bfloat16 for v in state.values())


def test_bad_knob_is_bad_args(tmp_path: Path) -> None:
    rc, events, _ = _train("--data", tmp_path / "x", "--out", tmp_path, "--epochs", "1", "--batch-size", "1",
                           "--sync-every", "0")  # fmt: skip
    assert (
        rc == ExitCode.BAD_ARGS
        and events[-1]["code"] == "BAD_ARGS"
        and "--sync-every" in events[-1]["message"]
    )
