"""A real Prometheus server scrapes the in-process service's ``/metrics``; the test reads
the values back through Prometheus's HTTP API (loopback only, started and stopped by PID).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from daemon.selfplay_sim import write_games
from daemon.service.app import build_app
from daemon.service.supervisor import Service
from daemon.settings import settings_from_mapping
from tests.support.redis_server import free_port
from tests.support.system_deps import requires

PROMETHEUS = shutil.which("prometheus")
pytestmark = requires("prometheus")
KEY = "square8_2p"


@asynccontextmanager
async def prometheus(tmp_path: Path, target_port: int) -> AsyncIterator[str]:
    assert PROMETHEUS is not None
    port = free_port()
    conf = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "ringrift-training-daemon",
                "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(conf))
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
        print((tmp_path / "prometheus.log").read_text()[-3000:])  # shown by pytest on failure


async def query(session: aiohttp.ClientSession, base: str, expr: str) -> list[dict[str, Any]]:
    try:
        async with session.get(f"{base}/api/v1/query", params={"query": expr}) as resp:
            if resp.status != 200:
                return []
            body = await resp.json()
    except aiohttp.ClientError:
        return []  # not listening yet
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def wait_value(
    session: aiohttp.ClientSession, base: str, expr: str, expected: float, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = await query(session, base, expr)
        if len(seen) == 1 and float(seen[0]["value"][1]) == expected:
            return
        await asyncio.sleep(0.25)  # the event loop keeps serving /metrics meanwhile
    raise AssertionError(f"{expr}: wanted {expected}, Prometheus has {seen}")


def scraped(text: str, name: str, labels: dict[str, str]) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise AssertionError(f"{name}{labels} not in /metrics")


async def test_prometheus_scrapes_service_metrics(tmp_path: Path) -> None:
    settings = settings_from_mapping(
        {
            "data_dir": str(tmp_path / "data"),
            "game_dbs": [str(tmp_path / "games" / "*.db")],
            "configs": [KEY, "hex8_2p"],
            "http": {"host": "127.0.0.1", "port": 0},
            "triggers": {"bootstrap_min_games": 100000, "freshness_threshold": 100000},
        },
        {},
    )
    db = tmp_path / "games" / "selfplay.db"
    first = write_games(db, KEY, 30, seed=1)
    service = Service(build_app(settings, {}), handle_signals=False)
    await service.start()
    try:
        await service.tick(datetime.now(UTC))
        assert service.http is not None and service.http.bound_port
        shown = service.app.view.configs[KEY].usable_games
        assert shown == first > 0
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            prometheus(tmp_path, service.http.bound_port) as base,
        ):
            async with session.get(f"http://127.0.0.1:{service.http.bound_port}/metrics") as resp:
                text = await resp.text()
            await wait_value(session, base, f'ringrift_training_usable_games{{config="{KEY}"}}', shown, 20)
            await wait_value(session, base, 'up{job="ringrift-training-daemon"}', 1)
            await wait_value(session, base, 'ringrift_lock_backend{backend="file"}', 1)
            await wait_value(session, base, 'ringrift_lock_backend{backend="redis"}', 0)
            for signal_name in ("data_freshness", "model_staleness", "performance_regression"):
                labels = {"config": KEY, "signal": signal_name}
                want = scraped(text, "ringrift_training_signal_score", labels)
                expr = f'ringrift_training_signal_score{{config="{KEY}",signal="{signal_name}"}}'
                await wait_value(session, base, expr, want)

            # A change in the service shows up at Prometheus on a later scrape.
            more = await asyncio.to_thread(write_games, db, KEY, 12, seed=2)
            await service.tick(datetime.now(UTC))
            assert service.app.view.configs[KEY].usable_games == first + more
            await wait_value(session, base, f'ringrift_training_usable_games{{config="{KEY}"}}', first + more)
    finally:
        await service.drain()
        await service.close()
