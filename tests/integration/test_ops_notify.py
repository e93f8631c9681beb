"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.service.notify import SystemdNotifier, Watchdog


class Listener:
    """What systemd does: a bound SOCK_DGRAM socket collecting notify datagrams."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name  # value for NOTIFY_SOCKET

    def drain(self) -> list[str]:
        out: list[str] = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    def recv(self, timeout: float = 10.0) -> str:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        finally:
            self.sock.setblocking(False)


def _bind(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setblocking(False)
    return sock


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify.sock"
    short_dir = None
    if len(str(path)) > 100:  # sun_path is 108 bytes
        short_dir = tempfile.mkdtemp(prefix="rrn")
        path = Path(short_dir) / "n.sock"
    sock = _bind(str(path))
    try:
        yield Listener(sock, str(path))
    finally:
        sock.close()
        path.unlink(missing_ok=True)
        if short_dir:
            os.rmdir(short_dir)


def _notifier(listener: Listener, *, watchdog_usec: int | None = 2_000_000) -> SystemdNotifier:
    return SystemdNotifier(listener.name, watchdog_usec, os.getpid(), pid=os.getpid())


def test_ready_status_stopping_extend(listener: Listener) -> None:
    with _notifier(listener) as n:
        assert n.ready("ticking\nsecond line")
        assert n.status("12 configs, 1 running")
        assert n.extend_timeout(30_000_000)
        assert n.stopping("draining")
    assert listener.drain() == [
        "READY=1\nSTATUS=ticking second line",
        "STATUS=12 configs, 1 running",
        "EXTEND_TIMEOUT_USEC=30000000",
        "STOPPING=1\nSTATUS=draining",
    ]


def test_watchdog_pings_only_while_progressing(listener: Listener) -> None:
    # WatchdogSec=2 -> interval 1 s; progress window 1.5 s; pings at most every 0.5 s.
    with _notifier(listener) as n:
        wd = Watchdog(n, progress_window=1.5)
        assert n.watchdog_interval == 1.0
        now = 100.0
        assert not wd.maybe_ping(now)  # no beat yet: nothing proves the loop runs
        sent = []
        for _ in range(8):  # loop ticking every 0.25 s, pinger on the same cadence
            wd.beat(now)
            sent.append(wd.maybe_ping(now))
            now += 0.25
        assert sent == [True, False, True, False, True, False, True, False]
        assert listener.drain() == ["WATCHDOG=1"] * 4
        # The loop blocks: no more beats. Pings stop once the window passes, forever.
        last_beat = wd.last_beat
        assert last_beat is not None
        blocked = [wd.maybe_ping(last_beat + dt) for dt in (0.5, 1.0, 1.6, 2.0, 5.0, 60.0)]
        # A beat up to 1.5 s old still counts; after that the blocked loop never pings again.
        assert blocked == [True, True, False, False, False, False]
        assert listener.drain() == ["WATCHDOG=1"] * 2
        assert wd.pings == 6
        # Progress resumes: pings resume.
        wd.beat(last_beat + 61.0)
        assert wd.maybe_ping(last_beat + 61.0)
        assert listener.drain() == ["WATCHDOG=1"]


def test_no_watchdog_when_pid_differs(listener: Listener) -> None:
    n = SystemdNotifier(listener.name, 2_000_000, os.getpid() + 1, pid=os.getpid())
    with n:
        wd = Watchdog(n)
        wd.beat(1.0)
        assert not wd.maybe_ping(1.0)
        assert not n.watchdog()
        assert n.ready()  # READY still goes out; only the watchdog is someone else's
    assert listener.drain() == ["READY=1"]


def test_abstract_socket() -> None:
    name = f"ringrift-test-{uuid.uuid4().hex}"
    sock = _bind(b"\0" + name.encode())
    try:
        listener = Listener(sock, "@" + name)
        with SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name}) as n:
            assert n.ready()
            assert n.status("abstract")
        assert listener.drain() == ["READY=1", "STATUS=abstract"]
    finally:
        sock.close()


def test_send_failure_is_reported_not_raised(tmp_path: Path) -> None:
    with SystemdNotifier(str(tmp_path / "gone.sock"), None, None) as n:
        assert n.enabled
        assert n.ready() is False


async def test_run_task_pings_from_event_loop(listener: Listener) -> None:
    clock_value = [0.0]
    with _notifier(listener) as n:
        wd = Watchdog(n, progress_window=1.0, ping_every=0.0)
        wd.beat(0.0)
        task = asyncio.create_task(wd.run(period=0.001, clock=lambda: clock_value[0]))
        try:
            assert await asyncio.to_thread(listener.recv) == "WATCHDOG=1"
            clock_value[0] = 5.0  # time passes, the loop made no progress
            await asyncio.sleep(0.01)
            listener.drain()
            pings = wd.pings
            for _ in range(5):
                await asyncio.sleep(0.005)
            assert wd.pings == pings
            assert listener.drain() == []
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


CHILD = textwrap.dedent(
    """
    import os, subprocess, sys
    from daemon.service.notify import SystemdNotifier, child_env
    n = SystemdNotifier.from_environ(os.environ, pid=os.getpid())
    assert n.watchdog_enabled, dict(os.environ)
    n.ready("child up")
    n.watchdog()
    # A grandchild (the trainer) with the stripped env cannot notify.
    code = "from daemon.service.notify import SystemdNotifier; import os; "
    code += "n = SystemdNotifier.from_environ(os.environ); "
    code += "assert not n.enabled; assert not n.ready('impostor')"
    subprocess.run([sys.executable, "-c", code], env=child_env(os.environ), check=True)
    # A grandchild with the inherited env: watchdog is not its to feed (WATCHDOG_PID differs).
    code = "from daemon.service.notify import SystemdNotifier; import os; "
    code += "n = SystemdNotifier.from_environ(os.environ, pid=os.getpid()); "
    code += "assert n.enabled and not n.watchdog_enabled; assert not n.watchdog()"
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ), check=True)
    n.stopping()
    """
)


def test_real_process_env_and_child_stripping(listener: Listener) -> None:
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, NOTIFY_SOCKET=listener.name, WATCHDOG_USEC="4000000", PYTHONPATH=str(repo))
    # Like systemd: WATCHDOG_PID is the main process's pid (exec keeps the shell's pid).
    proc = subprocess.run(
        ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$0" -c "$1"', sys.executable, CHILD],
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0
    assert listener.drain() == ["READY=1\nSTATUS=child up", "WATCHDOG=1", "STOPPING=1"]
