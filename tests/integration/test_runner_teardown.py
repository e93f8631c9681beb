"""TrainerRunner against fake trainers that finish and then die in teardown; the epoch INFO line.

A DDP rank can abort in gloo teardown after rank 0 printed ``done`` and wrote the checkpoint
(torchrun then exits 1). The run succeeded: reason ``teardown_crash``, result OK, the process's
own status kept in ``process_exit``, and a ``trainer.teardown_crash`` warning. A checkpoint that
is missing, truncated or not a zip, or an ``error`` event, keeps the run failed.
"""

from __future__ import annotations

import os
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.training.args import TrainerArgs
from daemon.training.runner import TrainerRunner


def _runner(tmp_path: Path) -> TrainerRunner:
    return TrainerRunner(
        timeout=30.0,
        grace=0.5,
        heartbeat_timeout=30.0,
        state_dir=tmp_path / "state",
        env={"PATH": os.environ.get("PATH", "")},
    )


def _fake(
    tmp_path: Path, *, ending: str, size_delta: int = 0, interrupted: bool = False, extra: str = ""
) -> Path:
    """A trainer that prints start/epoch, writes a real zip checkpoint, prints done, then ``ending``."""
    out = tmp_path / "out"
    script = tmp_path / "fake_trainer.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, os, sys, zipfile
            out = {str(out)!r}
            os.makedirs(out, exist_ok=True)
            print(json.dumps({{"event": "start", "world_size": 2}}), flush=True)
            print(json.dumps({{"event": "epoch", "epoch": 1, "epochs": 1, "train_loss": 1.5,
                               "val_loss": 1.25, "policy_accuracy": 0.5, "samples_per_second": 99.0}}),
                  flush=True)
            path = os.path.join(out, "model.pt")
            with zipfile.ZipFile(path, "w") as zf:
                zf.writestr("archive/data.pkl", b"weights" * 100)
            size = os.path.getsize(path) + {size_delta}
            print(json.dumps({{"event": "done", "checkpoint": path, "checkpoint_bytes": size,
                               "interrupted": {interrupted!r}}}), flush=True)
            {extra}
            print("terminate called without an active exception", file=sys.stderr, flush=True)
            {ending}
            """
        )
    )
    return script


ARGS = TrainerArgs(data=Path("/nonexistent.npz"), out=Path("/nonexistent"), epochs=1, batch_size=8)


async def _run(tmp_path: Path, script: Path) -> tuple[Any, list[dict[str, Any]]]:
    with capture_logs() as logs:
        outcome = await _runner(tmp_path).run(ARGS, run_id="td", argv=[sys.executable, str(script)])
    return outcome, logs


@pytest.mark.parametrize(("ending", "process_exit"), [("os.abort()", -6), ("sys.exit(1)", 1)])
async def test_finished_run_with_a_teardown_crash_succeeds(
    tmp_path: Path, ending: str, process_exit: int
) -> None:
    outcome, logs = await _run(tmp_path, _fake(tmp_path, ending=ending))
    assert outcome.reason == "teardown_crash"
    assert (outcome.exit_code, outcome.exit_name, outcome.process_exit) == (0, "OK", process_exit)
    assert outcome.ok and outcome.checkpoint == tmp_path / "out" / "model.pt"
    crash = next(e for e in logs if e["event"] == "trainer.teardown_crash")
    assert crash["log_level"] == "warning" and crash["process_exit"] == process_exit
    assert crash["process_exit_name"] == ("SIGABRT" if process_exit < 0 else "INTERNAL_ERROR")
    assert any("terminate called" in line for line in crash["stderr_tail"])
    exited = next(e for e in logs if e["event"] == "trainer.exited")
    assert exited["reason"] == "teardown_crash" and exited["process_exit"] == process_exit


async def test_interrupted_run_with_a_teardown_crash_is_interrupted(tmp_path: Path) -> None:
    outcome, _ = await _run(tmp_path, _fake(tmp_path, ending="os.abort()", interrupted=True))
    assert (outcome.reason, outcome.exit_code, outcome.exit_name) == ("teardown_crash", 5, "INTERRUPTED")
    assert outcome.checkpoint is not None and not outcome.ok


@pytest.mark.parametrize("fault", ["truncated", "not_a_zip", "missing", "error_event"])
async def test_crash_after_done_without_a_complete_checkpoint_fails(tmp_path: Path, fault: str) -> None:
    ckpt = str(tmp_path / "out" / "model.pt")
    extra = {
        "truncated": f"open({ckpt!r}, 'r+b').truncate(40)",
        "not_a_zip": f"open({ckpt!r}, 'wb').write(b'x' * os.path.getsize({ckpt!r}))",
        "missing": f"os.unlink({ckpt!r})",
        "error_event": "print(json.dumps({'event': 'error', 'code': 'BAD_DATA'}), flush=True)",
    }[fault]
    outcome, logs = await _run(tmp_path, _fake(tmp_path, ending="os.abort()", extra=extra))
    assert outcome.reason == "signal" and outcome.exit_name == "SIGABRT" and not outcome.ok
    assert outcome.process_exit == -6
    assert not any(e["event"] == "trainer.teardown_crash" for e in logs)


async def test_size_mismatch_is_not_complete(tmp_path: Path) -> None:
    outcome, _ = await _run(tmp_path, _fake(tmp_path, ending="sys.exit(1)", size_delta=1))
    assert (outcome.reason, outcome.exit_name) == ("exit", "INTERNAL_ERROR") and not outcome.ok


async def test_clean_exit_is_plain_ok(tmp_path: Path) -> None:
    outcome, logs = await _run(tmp_path, _fake(tmp_path, ending="sys.exit(0)"))
    assert (outcome.reason, outcome.exit_name, outcome.process_exit) == ("ok", "OK", 0) and outcome.ok
    epoch = next(e for e in logs if e["event"] == "trainer.epoch")
    assert epoch["log_level"] == "info" and epoch["run_id"] == "td"
    assert (epoch["epoch"], epoch["epochs"], epoch["train_loss"], epoch["val_loss"]) == (1, 1, 1.5, 1.25)
    assert epoch["policy_accuracy"] == 0.5 and epoch["samples_per_second"] == 99.0
    assert epoch["eta_seconds"] == 0.0  # the last epoch: nothing left
    progress = [e for e in logs if e["event"] == "trainer.progress"]
    assert progress and all(e["log_level"] == "debug" for e in progress)


def test_zip_helper_matches_torch_save_format(tmp_path: Path) -> None:
    """The completeness check reads zip archives: torch.save writes one."""
    import torch

    path = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(3)}, path)
    assert zipfile.is_zipfile(path)
