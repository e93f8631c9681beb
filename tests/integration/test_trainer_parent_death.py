"""The trainer does not outlive its supervisor: parent-death signal first, supervisor-pid watcher as backstop.

Real processes: a supervising python process starts ``python -m daemon.training`` on a real file
(1000 epochs: it would run for minutes) and is SIGKILLed while the trainer is still inside
``import torch`` (libtorch mapped, no ``start`` line yet).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from daemon.training.exitcodes import ExitCode
from tests.support.npz_synth import write_synth_npz

REPO = Path(__file__).resolve().parents[2]

SUPERVISOR = """
    import os, subprocess, sys, time
    log, pidfile, *argv = sys.argv[1:]
    with open(log, "w") as out:
        child = subprocess.Popen([sys.executable, "-m", "daemon.training", *argv], stdout=out,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
    with open(pidfile + ".tmp", "w") as fh:
        fh.write(str(child.pid))
    os.replace(pidfile + ".tmp", pidfile)
    time.sleep(600)
"""


def _env() -> dict[str, str]:
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "RINGRIFT_SUPERVISOR_PID")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return env


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _poll(cond: object, bound: float) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(0.02)
    return False


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def _trainer_argv(tmp_path: Path) -> list[str]:
    data = write_synth_npz(tmp_path / "d.npz", 600)
    out = tmp_path / "o"
    return [
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "1000",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]


def test_supervisor_killed_during_import_torch_takes_the_trainer_with_it(tmp_path: Path) -> None:
    log, pidfile = tmp_path / "trainer.out", tmp_path / "trainer.pid"
    script = tmp_path / "supervisor.py"
    script.write_text(textwrap.dedent(SUPERVISOR))
    sup = subprocess.Popen(
        [sys.executable, str(script), str(log), str(pidfile), *_trainer_argv(tmp_path)],
        env=_env(),
        cwd=REPO,
        start_new_session=True,
    )
    child = 0
    try:
        assert _poll(pidfile.exists, 30), "supervisor did not start the trainer"
        child = int(pidfile.read_text())
        assert _poll(lambda: "libtorch" in _maps(child), 60), "trainer never loaded libtorch"
        os.kill(sup.pid, signal.SIGKILL)
        assert "start" not in log.read_text()  # still importing / setting up: no handlers yet
        sup.wait(timeout=10)
        assert _poll(lambda: not _alive(child), 15), "trainer outlived its supervisor"
        assert "start" not in log.read_text()
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_watcher_stops_a_training_run_when_the_supervisor_pid_dies(tmp_path: Path) -> None:
    """The portable backstop: the watched pid (not our parent) dies -> finish the step, save, exit."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    env = {**_env(), "RINGRIFT_SUPERVISOR_PID": str(sleeper.pid)}
    cmd = [sys.executable, "-m", "daemon.training", *_trainer_argv(tmp_path), "--heartbeat-interval", "0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line)["event"] == "heartbeat":  # training
                break
        sleeper.kill()
        sleeper.wait()
        rest, _ = proc.communicate(timeout=30)
    finally:
        for p in (sleeper, proc):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert proc.returncode == ExitCode.INTERRUPTED
    done = json.loads(rest.strip().splitlines()[-1])
    assert done["event"] == "done" and done["interrupted"] is True
    ckpt = tmp_path / "o" / "model.pt"
    assert done["checkpoint_bytes"] == ckpt.stat().st_size
    assert torch.load(ckpt, weights_only=True)["metadata"]["interrupted"] is True
