"""Idle service: RSS and CPU per tick with 12 configs and 4 game DBs, and in-process tick time.

Runs the real service process (``python -m daemon run``) for ``RUN_SECONDS`` with poll and
decide every 0.5 s and thresholds too high to train, next to a baseline process that only
imports the service's libraries and sleeps. Reports:

* ``rss_mb`` (VmRSS at the end) vs the baseline's, as a ratio; target < 150 MB;
* ``torch_loaded``: whether any torch library is mapped into the service (must be false);
* ``cpu_ms_per_tick``: utime+stime over the steady window / decide ticks in it (the poll job,
  the health job and HTTP idle included), baseline CPU over the same window;
* ``tick_ms``: in-process ``Service.tick(now)`` (poll + health + decide), median and p95,
  vs a bare ``GameSources.poll()`` on the same DBs; target < 50 ms. Measured in a child
  process so logging can be configured there (to stderr) without touching this process.

Run: ``python -m bench.service_idle`` (prints one JSON object).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from daemon.keys import ALL_CONFIG_KEYS
from daemon.selfplay_sim import write_games

DBS = 4
GAMES_PER_CONFIG = 30  # per DB: 360 games per DB, 1440 in all
INTERVAL = 0.5
RUN_SECONDS = 20.0
WARMUP_SECONDS = 5.0
TICKS_IN_PROCESS = 60
CLK_TCK = os.sysconf("SC_CLK_TCK")
BASELINE_IMPORTS = "asyncio, aiohttp, prometheus_client, redis, apscheduler, structlog, numpy, yaml, pydantic"
NO_TRAINING = {"bootstrap_min_games": 1_000_000, "freshness_threshold": 1_000_000, "min_interval": 3600}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_dbs(root: Path, dbs: int = DBS, per_config: int = GAMES_PER_CONFIG) -> list[Path]:
    paths = []
    for i in range(dbs):
        path = root / "games" / f"selfplay{i}.db"
        for j, key in enumerate(ALL_CONFIG_KEYS):
            write_games(path, key, per_config, seed=1000 * i + j)
        paths.append(path)
    return paths


def write_settings(
    root: Path,
    name: str,
    *,
    port: int | None,
    configs: list[str] | tuple[str, ...] = ALL_CONFIG_KEYS,
    triggers: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    cfg: dict[str, Any] = {
        "data_dir": str(root / f"data-{name}"),
        "game_dbs": [str(root / "games" / "*.db")],
        "configs": list(configs),
        "http": {"host": "127.0.0.1", "port": port} if port is not None else {"enabled": False},
        "schedule": {
            "poll_interval": INTERVAL,
            "decide_interval": INTERVAL,
            "health_interval": 5,
            "drain_timeout": 2,
        },
        "triggers": triggers or NO_TRAINING,
        "training": training or {"epochs": 1, "batch_size": 32, "channels": 4, "blocks": 1, "device": "cpu"},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_service(cfg: Path, log: Path, *, log_level: str = "INFO", env: dict[str, str] | None = None) -> Any:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "--log-level", log_level, "run", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


def stop(proc: Any, timeout: float = 15.0) -> int | None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    rc: int | None = proc.returncode
    return rc


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def wait_healthy(port: int, proc: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        try:
            if get(port, "/healthz", 2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("service did not become healthy")


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def proc_status(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` kB field in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def torch_mapped(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps or "/torch/" in maps


def _tick_child(cfg: Path) -> dict[str, Any]:
    """In-process ``Service.tick`` vs bare ``GameSources.poll`` (runs in a child process)."""
    from daemon.data.sources import GameSources
    from daemon.logs import configure_logging
    from daemon.service.app import build_app
    from daemon.service.supervisor import Service
    from daemon.settings import load_settings

    configure_logging("WARNING", stream=sys.stderr)  # this child's own logging
    settings = load_settings(cfg, {})

    async def run() -> dict[str, Any]:
        service = Service(build_app(settings, {}), handle_signals=False)
        await service.start()
        try:
            t = time.perf_counter()
            await service.tick(datetime.now(UTC))
            cold = time.perf_counter() - t
            ticks = []
            for _ in range(TICKS_IN_PROCESS):
                t = time.perf_counter()
                await service.tick(datetime.now(UTC))
                ticks.append(time.perf_counter() - t)
        finally:
            await service.drain()
            await service.close()
        sources = GameSources(settings.game_dbs, settings.configs)
        try:
            t = time.perf_counter()
            sources.poll()
            poll_cold = time.perf_counter() - t
            polls = []
            for _ in range(TICKS_IN_PROCESS):
                t = time.perf_counter()
                sources.poll()
                polls.append(time.perf_counter() - t)
        finally:
            sources.close()
        return {
            "tick_cold_ms": round(cold * 1000, 2),
            "tick_median_ms": round(statistics.median(ticks) * 1000, 3),
            "tick_p95_ms": round(sorted(ticks)[int(0.95 * len(ticks))] * 1000, 3),
            "poll_cold_ms": round(poll_cold * 1000, 2),
            "poll_median_ms": round(statistics.median(polls) * 1000, 3),
            "tick_vs_poll_ratio": round(statistics.median(ticks) / statistics.median(polls), 2),
        }

    return asyncio.run(run())


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rr-bench-idle-") as d:
        root = Path(d)
        t = time.perf_counter()
        dbs = build_dbs(root)
        build_s = time.perf_counter() - t
        port = free_port()
        cfg = write_settings(root, "service", port=port)
        svc = start_service(cfg, root / "service.log")
        base = subprocess.Popen(
            [sys.executable, "-c", f"import {BASELINE_IMPORTS}, time; time.sleep(3600)"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_healthy(port, svc)
            started = time.monotonic()
            time.sleep(WARMUP_SECONDS)
            m0 = get(port, "/metrics")[1].decode()
            c0, b0, w0 = cpu_seconds(svc.pid), cpu_seconds(base.pid), time.monotonic()
            time.sleep(RUN_SECONDS - WARMUP_SECONDS)
            m1 = get(port, "/metrics")[1].decode()
            c1, b1, w1 = cpu_seconds(svc.pid), cpu_seconds(base.pid), time.monotonic()
            ticks = metric_sum(m1, "ringrift_tick_duration_seconds_count") - metric_sum(
                m0, "ringrift_tick_duration_seconds_count"
            )
            polls = metric_sum(m1, "ringrift_poll_duration_seconds_count") - metric_sum(
                m0, "ringrift_poll_duration_seconds_count"
            )
            rss, hwm = proc_status(svc.pid, "VmRSS"), proc_status(svc.pid, "VmHWM")
            base_rss = proc_status(base.pid, "VmRSS")
            torch = torch_mapped(svc.pid)
            window = w1 - w0
            uptime = time.monotonic() - started
        finally:
            rc = stop(svc)
            base.kill()
            base.wait(timeout=10)
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.service_idle",
                "--tick-child",
                str(write_settings(root, "tick", port=None)),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
            cwd=Path(__file__).resolve().parents[1],  # so ``bench`` imports from any cwd
        )
        tick = json.loads(child.stdout)
    cpu_ms = (c1 - c0) * 1000
    return {
        "bench": "service_idle",
        "configs": len(ALL_CONFIG_KEYS),
        "dbs": len(dbs),
        "games": DBS * GAMES_PER_CONFIG * len(ALL_CONFIG_KEYS),
        "db_build_seconds": round(build_s, 2),
        "interval_s": INTERVAL,
        "service_seconds": round(uptime, 1),
        "window_seconds": round(window, 2),
        "ticks_in_window": int(ticks),
        "polls_in_window": int(polls),
        "rss_mb": round(rss, 1),
        "rss_peak_mb": round(hwm, 1),
        "baseline_rss_mb": round(base_rss, 1),
        "rss_ratio": round(rss / base_rss, 2),
        "rss_target_mb": 150,
        "rss_ok": rss < 150,
        "torch_loaded": torch,
        "cpu_ms_per_tick": round(cpu_ms / ticks, 2) if ticks else None,
        "cpu_percent": round(100 * (c1 - c0) / window, 2),
        "baseline_cpu_percent": round(100 * (b1 - b0) / window, 2),
        "cpu_tick_resolution_ms": round(1000 / CLK_TCK, 1),
        **tick,
        "tick_target_ms": 50,
        "tick_ok": tick["tick_p95_ms"] < 50,
        "service_exit": rc,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--tick-child":
        print(json.dumps(_tick_child(Path(sys.argv[2]))))
    else:
        print(json.dumps(main()))
