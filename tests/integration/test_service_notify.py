"""sd_notify against the real service process and a real ``NOTIFY_SOCKET`` datagram socket.

READY=1 once ``/metrics`` answers, WATCHDOG=1 while the loop runs, none while the
process is stopped (SIGSTOP past the watchdog timeout), pings again after SIGCONT,
STOPPING=1 on SIGTERM and exit 0.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.support.redis_server import free_port

WATCHDOG_USEC = 2_000_000
WATCHDOG_INTERVAL = WATCHDOG_USEC / 2_000_000  # sd_watchdog_enabled(3): ping at half the timeout


class Listener:
    """The systemd side: a bound datagram socket; every message with its receipt time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.messages: list[tuple[float, str]] = []

    def _recv(self, timeout: float) -> tuple[float, str] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        msg = (time.monotonic(), data.decode())
        self.messages.append(msg)
        return msg

    def wait_for(self, pred: Callable[[str], bool], timeout: float) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self._recv(left)
            if msg is not None and pred(msg[1]):
                return msg
        raise AssertionError(f"no matching datagram within {timeout}s; got {self.messages}")

    def collect(self, seconds: float) -> list[tuple[float, str]]:
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self._recv(left)
            if msg is not None:
                out.append(msg)
        return out

    def drain(self) -> list[tuple[float, str]]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096)
                msg = (time.monotonic(), data.decode())
                self.messages.append(msg)
                out.append(msg)
        except BlockingIOError:
            return out
        finally:
            self.sock.setblocking(True)


@contextmanager
def notify_socket() -> Iterator[tuple[str, socket.socket]]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="rr-notify-") as d:
        path = os.path.join(d, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(path)
            yield path, sock
        finally:
            sock.close()


def service_config(tmp_path: Path, port: int) -> Path:
    cfg: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"),
        "game_dbs": [str(tmp_path / "games" / "*.db")],
        "configs": ["square8_2p"],
        "http": {"host": "127.0.0.1", "port": port},
        "schedule": {"poll_interval": 0.5, "decide_interval": 0.5, "health_interval": 1, "drain_timeout": 2},
        "triggers": {"bootstrap_min_games": 100000, "freshness_threshold": 100000, "min_interval": 3600},
    }
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def process_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def http_ok(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        return resp.status == 200 and b"ringrift_daemon_build_info" in resp.read()


def test_ready_watchdog_stopping_and_silence_while_stopped(tmp_path: Path) -> None:
    port = free_port()
    cfg = service_config(tmp_path, port)
    log = (tmp_path / "service.log").open("wb")
    with notify_socket() as (path, sock):
        env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID", "LISTEN_PID")}
        # No WATCHDOG_PID: sd_watchdog_enabled(3) then treats the watchdog as ours.
        env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC=str(WATCHDOG_USEC), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        listener = Listener(sock)
        try:
            _, ready = listener.wait_for(lambda m: "READY=1" in m, timeout=20)
            assert http_ok(port), "READY=1 before /metrics answered"
            assert "STATUS=" in ready
            assert not any("WATCHDOG=1" in m for _, m in listener.messages[:-1]), listener.messages

            pings = [listener.wait_for(lambda m: m == "WATCHDOG=1", timeout=5) for _ in range(3)]
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(pings)]
            assert all(g < WATCHDOG_USEC / 1e6 for g in gaps), gaps  # inside WatchdogSec

            os.kill(proc.pid, signal.SIGSTOP)
            deadline = time.monotonic() + 5
            while process_state(proc.pid) != "T":
                assert time.monotonic() < deadline, "service did not stop"
                time.sleep(0.01)
            listener.drain()  # whatever was sent before the stop took effect
            stopped_at = time.monotonic()
            during = listener.collect(2.5 * WATCHDOG_INTERVAL)  # past the whole WatchdogSec
            resumed_at = time.monotonic()
            os.kill(proc.pid, signal.SIGCONT)
            assert not [m for m in during if "WATCHDOG=1" in m[1]], (stopped_at, resumed_at, during)

            t, _ = listener.wait_for(lambda m: m == "WATCHDOG=1", timeout=5)
            assert t > resumed_at
            listener.wait_for(lambda m: m == "WATCHDOG=1", timeout=5)

            proc.send_signal(signal.SIGTERM)
            _, stopping = listener.wait_for(lambda m: "STOPPING=1" in m, timeout=10)
            assert "STATUS=draining" in stopping
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=10)
            log.close()
            print((tmp_path / "service.log").read_text()[-3000:])  # shown by pytest on failure
