"""Shared parts of the Redis, source and cluster chaos scenarios.

In-process :class:`~daemon.service.supervisor.Service` objects driven by ``tick(now)``
(the real trainer subprocess, real SQLite, real redis-server), a TCP proxy that
delays bytes (latency injection), and the checks every scenario makes: no
orphan trainer process, no torn file, the right alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from daemon.service.app import build_app
from daemon.service.supervisor import Service
from daemon.settings import Settings, settings_from_mapping

TRAINER_MARKER = "daemon.training"


def chaos_mapping(
    tmp: Path,
    *,
    configs: list[str],
    game_dbs: list[str],
    redis_url: str | None = None,
    backend: str = "file",
    ttl: float = 2.0,
    epochs: int = 1,
    bootstrap: int = 20,
    name: str = "data",
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "data_dir": str(tmp / name),
        "game_dbs": game_dbs,
        "configs": configs,
        "locks": {"backend": backend},
        "http": {"enabled": False},
        "schedule": {"poll_interval": 1, "decide_interval": 1, "health_interval": 1, "drain_timeout": 3},
        "triggers": {"bootstrap_min_games": bootstrap, "freshness_threshold": 100000, "min_interval": 3600},
        "training": {
            "epochs": epochs,
            "batch_size": 32,
            "channels": 4,
            "blocks": 1,
            "device": "cpu",
            "grace": 3,
        },
    }
    if redis_url is not None:
        data["redis"] = {"url": redis_url, "ttl": ttl, "key_prefix": "chaos:", "connect_timeout": 0.5}
    return data


def chaos_settings(tmp: Path, **kw: Any) -> Settings:
    """Settings for a fast chaos run: tiny model, 1 s schedule, short TTL (see :func:`chaos_mapping`)."""
    return settings_from_mapping(chaos_mapping(tmp, **kw), {})


@contextlib.asynccontextmanager
async def running_service(settings: Settings) -> AsyncIterator[Service]:
    service = Service(build_app(settings, {}), handle_signals=False)
    await service.start()
    try:
        yield service
    finally:
        await service.drain()
        await service.close()
        del service
        gc.collect()  # finalise this service's objects now: an unclosed connection shows up here


async def wait_for(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll ``pred`` until true; fail naming ``what`` after ``timeout`` seconds (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)


def trainer_pids(marker: str) -> list[int]:
    """Live (non-zombie) trainer processes whose command line mentions ``marker`` (a tmp path)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if TRAINER_MARKER in cmd and marker in cmd and state != "Z":
            out.append(int(name))
    return out


def assert_no_orphans(marker: Path | str, timeout: float = 15.0) -> None:
    """No trainer started by this test survives it (waits out a trainer's own grace)."""
    deadline = time.monotonic() + timeout
    while (left := trainer_pids(str(marker))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"orphan trainer processes: {left}"


def alerts_of(service: Service, kind: str) -> list[dict[str, Any]]:
    return [a for a in service.app.view.alerts if a.get("kind") == kind]


def metric(service: Service, name: str, **labels: str) -> float:
    return float(service.app.prom.get_sample_value(name, labels) or 0.0)


def journal_rows(runs_db: Path) -> list[dict[str, Any]]:
    """Every run of one node's journal (read-only; closed before returning)."""
    if not runs_db.exists():
        return []
    conn = sqlite3.connect(f"file:{runs_db}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY started_at")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def registry_rows(registry_db: Path) -> list[dict[str, Any]]:
    if not registry_db.exists():
        return []
    conn = sqlite3.connect(f"file:{registry_db}?mode=ro", uri=True, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return [
            dict(r)
            for r in conn.execute(
                "SELECT model_id, config_key, run_id, fencing_token, created_at"
                " FROM models ORDER BY created_at"
            )
        ]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def assert_npz_whole(path: Path) -> int:
    """The NPZ loads completely (no torn file); returns its row count."""
    with np.load(path, allow_pickle=False) as z:
        n = int(z[next(k for k in ("feature_cells", "features_packed", "features") if k in z.files)].shape[0])
        for name in ("globals", "values", "values_mp", "policy_index", "game_ids", "move_numbers"):
            assert z[name].shape[0] == n, name
        return n


def assert_no_temp_files(
    directory: Path, patterns: Iterable[str] = ("*.tmp", ".*.tmp*", "*.partial")
) -> None:
    left = [p for pat in patterns for p in directory.glob(pat)]
    assert not left, f"temporary files left behind: {left}"


class DelayProxy:
    """A loopback TCP proxy in front of a Redis that delays every chunk by ``delay`` seconds.

    ``delay`` may be changed at any time; it applies to chunks read afterwards, in
    both directions, so a request/reply round trip takes about ``2 * delay``.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay = 0.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._mutex = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        t = threading.Thread(target=self._accept, name="delay-proxy", daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._mutex:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._socks += [client, upstream]
                for src, dst in ((client, upstream), (upstream, client)):
                    t = threading.Thread(target=self._pump, args=(src, dst), daemon=True)
                    t.start()
                    self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self.delay > 0:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            socks = list(self._socks)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(timeout=5)
        for s in socks:
            s.close()
