"""TrainerRunner against fake trainer scripts: garbage output, timeout, cancel, heartbeat, orphans."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from daemon.training.args import TrainerArgs
from daemon.training.pidrecords import proc_start_time, write_record
from daemon.training.runner import TrainerRunner, reap_orphans

ARGS = TrainerArgs(data=Path("/nonexistent.npz"), out=Path("/nonexistent"), epochs=1, batch_size=8)


def _alive(pid: int) -> bool:
    """Running and not a zombie (a killed grandchild may wait for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _script(tmp_path: Path, body: str, name: str = "fake_trainer.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _runner(tmp_path: Path, **kw: Any) -> TrainerRunner:
    opts: dict[str, Any] = {
        "timeout": 30.0,
        "grace": 0.5,
        "heartbeat_timeout": 30.0,
        "state_dir": tmp_path / "state",
        "env": {"PATH": os.environ.get("PATH", "")},
    }
    opts.update(kw)
    return TrainerRunner(**opts)


STUBBORN = """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        time.sleep(600)
        os._exit(0)
    with open(sys.argv[1] + ".tmp", "w") as fh:
        fh.write(str(child))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    print('{"event": "start"}', flush=True)
    time.sleep(600)
"""


async def test_garbage_output_is_logged_and_outcome_correct(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = _script(
        tmp_path,
        f"""
        import json, os, sys
        print("Loading... 10%\\r20%\\r")
        print("{{not json")
        print("x" * 200_000)
        print(json.dumps({{"event": "epoch", "epoch": 1, "train_loss": 1.0, "run_id": "clash"}}))
        print("warning: something", file=sys.stderr)
        os.makedirs({str(out)!r}, exist_ok=True)
        open(os.path.join({str(out)!r}, "model.pt"), "wb").write(b"x")
        print(json.dumps({{"event": "done", "checkpoint": os.path.join({str(out)!r}, "model.pt")}}))
        print("trailing garbage")
        sys.exit(0)
    """,
    )
    seen: list[dict[str, Any]] = []
    runner = _runner(tmp_path, line_limit=64 * 1024)
    with capture_logs() as logs:
        outcome = await runner.run(
            ARGS, on_progress=seen.append, run_id="garbage", argv=[sys.executable, str(script)]
        )
    assert outcome.exit_code == 0 and outcome.exit_name == "OK" and outcome.reason == "ok"
    assert outcome.checkpoint == out / "model.pt"
    assert [e["event"] for e in seen] == ["epoch", "done"]
    assert outcome.last_progress is not None and outcome.last_progress["event"] == "done"
    assert outcome.stderr_tail == ["warning: something"]
    names = [e["event"] for e in logs]
    assert names.count("trainer.output") >= 2 and "trainer.output_overlong" in names
    assert "trainer.stderr" in names and "trainer.exited" in names
    assert not list((tmp_path / "state").glob("*.json"))  # pid record removed


async def test_exit_code_name_from_trainer(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        """
        import sys
        print('{"event": "error", "code": "BAD_DATA", "message": "x.npz: corrupt"}', flush=True)
        sys.exit(3)
    """,
    )
    outcome = await _runner(tmp_path).run(ARGS, run_id="bad", argv=[sys.executable, str(script)])
    assert (outcome.exit_code, outcome.exit_name, outcome.reason) == (3, "BAD_DATA", "exit")
    assert outcome.checkpoint is None


async def _stubborn_run(tmp_path: Path, **kw: Any) -> tuple[Any, int, bool]:
    script = _script(tmp_path, STUBBORN)
    pidfile = tmp_path / "grandchild.pid"
    runner = _runner(tmp_path, **kw.pop("runner", {}))
    cancel = asyncio.Event()
    record_seen = False

    def progress(event: dict[str, Any]) -> None:
        nonlocal record_seen
        record_seen = bool(list((tmp_path / "state").glob("trainer-*.json")))
        if kw.get("cancel_on_start"):
            cancel.set()

    outcome = await runner.run(
        ARGS,
        run_id="stubborn",
        cancel=cancel,
        on_progress=progress,
        argv=[sys.executable, str(script), str(pidfile)],
    )
    return outcome, int(pidfile.read_text()), record_seen


async def test_timeout_kills_whole_group(tmp_path: Path) -> None:
    outcome, grandchild, record_seen = await _stubborn_run(tmp_path, runner={"timeout": 1.5})
    assert outcome.reason == "timeout" and outcome.exit_name == "SIGKILL"
    assert record_seen and not list((tmp_path / "state").glob("*.json"))
    assert not _alive(outcome.pid) and not _alive(grandchild)


async def test_cancel_kills_whole_group(tmp_path: Path) -> None:
    outcome, grandchild, _ = await _stubborn_run(tmp_path, cancel_on_start=True)
    assert outcome.reason == "cancelled" and outcome.exit_code < 0
    assert not _alive(outcome.pid) and not _alive(grandchild)


async def test_heartbeat_loss_kills_group(tmp_path: Path) -> None:
    outcome, grandchild, _ = await _stubborn_run(tmp_path, runner={"heartbeat_timeout": 1.0})
    assert outcome.reason == "heartbeat"
    assert not _alive(grandchild)


def test_reap_orphans_ends_only_our_recorded_groups(tmp_path: Path) -> None:
    state = tmp_path / "state"
    script = _script(tmp_path, "import time\ntime.sleep(600)\n", name="daemon.training_fake.py")
    ours = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        for _ in range(100):
            if "daemon.training" in Path(f"/proc/{ours.pid}/cmdline").read_text(errors="replace"):
                break
            subprocess.run(["sleep", "0.05"], check=True)
        write_record(state, "ours", ours.pid, ours.pid, ["x"], "t")
        write_record(state, "other", other.pid, other.pid, ["x"], "t")  # cmdline lacks the marker
        stale = write_record(state, "stale", ours.pid, ours.pid, ["x"], "t")
        stale.write_text(stale.read_text().replace(str(proc_start_time(ours.pid)), "1"))  # pid reused
        assert reap_orphans(state, grace=2.0) == [ours.pid]
        assert ours.wait(timeout=10) < 0
        assert other.poll() is None
        assert not list(state.glob("*.json"))
    finally:
        for p in (ours, other):
            if p.poll() is None:
                p.kill()
            p.wait()


def test_child_env_and_commands(tmp_path: Path) -> None:
    r = _runner(
        tmp_path,
        env={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1", "KEEP": "1"},
        omp_num_threads=2,
        nproc_per_node=2,
        python="/py",
    )
    env = r.child_env("r1")
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env and env["KEEP"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1" and env["OMP_NUM_THREADS"] == "2"
    args = TrainerArgs(
        data=Path("d.npz"), out=Path("o"), epochs=2, batch_size=8, fencing_token=5, allow_legacy_pickle=True
    )
    cmd = r.command(args)
    assert cmd[:8] == [
        "/py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "daemon.training",
    ]
    assert "--fencing-token" in cmd and cmd[-1] == "--allow-legacy-pickle"


def test_torchrun_launcher_for_a_single_process(tmp_path: Path) -> None:
    args = TrainerArgs(data=Path("d.npz"), out=Path("o"), epochs=1, batch_size=8)
    assert _runner(tmp_path, python="/py").command(args)[:3] == ["/py", "-m", "daemon.training"]
    cmd = _runner(tmp_path, python="/py", launcher="torchrun").command(args)
    assert cmd[:6] == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
