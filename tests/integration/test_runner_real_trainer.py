"""TrainerRunner driving the real trainer: cancel mid-epoch checkpoints; 2-process DDP via torchrun."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import torch

from daemon.training.args import TrainerArgs
from daemon.training.runner import TrainerRunner
from tests.support.npz_synth import write_synth_npz

REPO = Path(__file__).resolve().parents[2]


def _runner(tmp_path: Path, **kw: Any) -> TrainerRunner:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(REPO)
    return TrainerRunner(
        timeout=100.0,
        grace=10.0,
        heartbeat_timeout=60.0,
        state_dir=tmp_path / "state",
        env=env,
        omp_num_threads=1,
        cwd=REPO,
        **kw,
    )


async def test_cancel_real_trainer_saves_checkpoint(tmp_path: Path) -> None:
    data = write_synth_npz(tmp_path / "d.npz", 4000)
    args = TrainerArgs(
        data=data,
        out=tmp_path / "o",
        epochs=50,
        batch_size=4,
        device="cpu",
        run_id="c1",
        fencing_token=9,
        heartbeat_interval=0.2,
    )
    cancel = asyncio.Event()
    events: list[str] = []

    def progress(e: dict[str, Any]) -> None:
        events.append(e["event"])
        if e["event"] == "heartbeat":
            cancel.set()

    outcome = await _runner(tmp_path).run(args, on_progress=progress, cancel=cancel, run_id="c1")
    assert outcome.reason == "cancelled" and outcome.exit_name == "INTERRUPTED"
    assert outcome.checkpoint == tmp_path / "o" / "model.pt"
    assert events[0] == "start" and events[-1] == "done"
    meta = torch.load(outcome.checkpoint, weights_only=True)["metadata"]
    assert meta["fencing_token"] == 9 and meta["interrupted"] is True


async def test_two_process_ddp_on_cpu_through_torchrun(tmp_path: Path) -> None:
    data = write_synth_npz(tmp_path / "d.npz", 400)
    out = tmp_path / "o"
    args = TrainerArgs(data=data, out=out, epochs=1, batch_size=16, device="cpu", channels=8, blocks=1)
    events: list[dict[str, Any]] = []
    outcome = await _runner(tmp_path, nproc_per_node=2).run(args, on_progress=events.append, run_id="ddp")
    assert outcome.exit_name == "OK", outcome.stderr_tail
    assert outcome.checkpoint == out / "model.pt"
    assert [p.name for p in out.iterdir()] == ["model.pt"]
    start = next(e for e in events if e["event"] == "start")
    assert start["world_size"] == 2
    assert sum(e["event"] == "done" for e in events) == 1  # rank 0 only
    ckpt = torch.load(out / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model_state"])
    assert sys.executable  # runner used the same interpreter
