"""A connection burst under a low ``RLIMIT_NOFILE`` (DESIGN 13, issue 17 item 9).

The service runs as a real process whose descriptor limit is 512 (soft and hard, set in the
child before exec, so raising the soft limit cannot help). While its first run exports and
trains, the test opens 3,000 connections that send nothing, half a request, or garbage, and
holds them, and sends malformed requests. ``/metrics`` must keep answering, the run must still
write its NPZ and register, the idle and slow connections must be closed by the service, and
the log must stay small (rate-limited one-line records, no traceback).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.selfplay_sim import write_games
from tests.chaos._helpers import (
    REPO,
    assert_npz_intact,
    child_environ,
    journal_runs,
    kill_test_processes,
    node_mapping,
    settings_of,
    stop_service,
    wait_until,
    write_config,
)
from tests.support.redis_server import free_port

KEY = "square8_2p"
NOFILE = 512
BURST = 3000
BOUND = 300.0
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_test_processes(tmp_path)


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``run`` in a child that lowers its own soft and hard limit first, before any import."""
    code = (
        f"import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE}))\n"
        f"from daemon.cli import main\nraise SystemExit(main(['run', '--config', {str(config)!r}]))\n"
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, env=child_environ(), cwd=REPO
        )


def _metrics(port: int, timeout: float = 20.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            return r.status == 200 and b"ringrift_" in r.read()
    except OSError:
        return False


def _open(port: int, n: int) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        out.append(s)
    return out


def _send(socks: list[socket.socket], data: bytes) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.send(data)


def _closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset: closed
        return True


def _served(port: int) -> int:
    """Established TCP connections whose local end is the service's port (the kernel's table).

    A connection the kernel dropped from a full accept queue stays established on the client
    side only, so the client's view cannot tell what the service still holds; this can."""
    want = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == want and fields[3] == "01":  # local address, state ESTABLISHED
            count += 1
    return count


def test_connection_burst_under_low_nofile(tmp_path: Path) -> None:
    db = tmp_path / "games.db"
    write_games(db, KEY, 70, seed=1)
    port = free_port()
    data = node_mapping(
        tmp_path,
        db,
        [KEY],
        http={"enabled": True, "port": port, "limits": {"idle_timeout": 3, "header_timeout": 2}},
        training={"epochs": 3},
    )
    settings = settings_of(data)
    log = tmp_path / "service.log"
    proc = _start(write_config(tmp_path, data), log)
    held: list[socket.socket] = []
    try:
        wait_until(lambda: _metrics(port, 2), BOUND, 0.2, "/metrics to answer")
        answered, asked = 0, 0
        t0 = time.monotonic()
        for _ in range(3):
            socks = _open(port, BURST // 3)
            held += socks
            time.sleep(0.5)  # let the connects complete before writing to them
            _send(socks[::3], b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished: slow
            _send(socks[1::3], b"\x16\x03\x01\x02\x00garbage\r\n\r\n")  # TLS-ish garbage: malformed
            asked += 1
            answered += _metrics(port)
        for _ in range(200):  # malformed requests, one connection each
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        slow = []  # slow clients: complete connections that never finish their headers
        for _ in range(20):
            c = socket.create_connection(("127.0.0.1", port), timeout=30)
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            c.setblocking(False)
            slow.append(c)
        held += slow
        gaps = []
        while True:  # scrape on while the run goes on; every scrape must be answered
            runs = journal_runs(settings)
            if runs and runs[-1]["state"] in ("succeeded", "failed", "interrupted"):
                break
            assert time.monotonic() - t0 < BOUND, f"the run did not finish: {runs}"
            t = time.monotonic()
            asked += 1
            answered += _metrics(port)
            gaps.append(time.monotonic() - t)
            time.sleep(0.2)
        assert answered == asked, f"/metrics answered {answered} of {asked} scrapes during the burst"
        print(f"burst: {asked} scrapes answered, slowest {max(gaps, default=0):.2f} s")
        run = journal_runs(settings)[-1]
        assert run["state"] == "succeeded", run
        npz = sorted(settings.training_dir.glob(f"{KEY}*.npz"))
        assert npz and assert_npz_intact(npz[-1]) > 0
        wait_until(lambda: all(_closed_by_peer(c) for c in slow), BOUND, 0.5, "slow clients to be cut off")
        # The service closes every connection that is idle or too slow, whoever holds it.
        wait_until(lambda: _served(port) == 0, BOUND, 0.5, "idle and slow connections to be closed")
        assert _metrics(port)
    finally:
        for s in held:
            s.close()
        stop_service(proc, timeout=BOUND)
    assert proc.returncode == 0
    text = log.read_text(errors="replace")
    size = log.stat().st_size
    assert size < 256 * 1024, f"log grew to {size} bytes"
    assert "Traceback" not in text and "out of system resource" not in text
    quiet = [line for line in text.splitlines() if "http." in line and "http.started" not in line]
    assert quiet, "no http.* record at all: the burst was not seen"
    assert all(len(line) < 600 for line in quiet), max(quiet, key=len)
    errors = [line for line in quiet if "http.request_error" in line]
    assert 0 < len(errors) <= 40, f"{len(errors)} request_error records for 200 malformed requests"
    assert any("http.client_too_slow" in line for line in quiet)
