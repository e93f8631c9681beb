"""PostgreSQL (the fleet's registry of record) down at start and mid-run, under a real
``daemon run`` process with its HTTP server (DESIGN 11, README "When one of them is down").

* Down at start: no run starts; the critical ``registry_unavailable`` alert carries the reason,
  which is also every config's decision; ``/metrics``, ``/status`` and ``ringrift-daemon
  status`` keep answering. When the server returns the node trains and the alert resolves.
* Down mid-run (stopped while the run trains): the run fails closed at registration with the
  reason, nothing is registered, its lock is released; when the server returns the node trains
  the config again, without a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.registry import ModelRegistry
from daemon.selfplay_sim import write_games
from tests.chaos._helpers import (
    child_environ,
    start_service,
    stop_process,
    stop_service,
    wait_until,
)
from tests.support.fleet import fleet_mapping, log_tails, node_runs, write_node_config
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import free_port

KEY = "square8_2p"

# A real service through two outages and three runs.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    server = PostgresServer()  # this test's own: it stops and restarts it
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:  # /healthz answers 503 when unhealthy: still an answer
        return e.code, e.read()


def _status(port: int) -> dict[str, Any]:
    code, body = _get(port, "/status")
    assert code == 200
    loaded: dict[str, Any] = json.loads(body)
    return loaded


def _registry_alert(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((a for a in status["alerts"] if a["kind"] == "registry_unavailable"), None)


def _assert_serving(port: int, cfg: Path) -> None:
    code, body = _get(port, "/metrics")
    assert code == 200 and b"ringrift_" in body
    res = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--json", "--config", str(cfg)],
        capture_output=True, text=True, env=child_environ(), timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "registry_unavailable" in res.stdout, res.stdout


def test_postgres_down_at_start_and_mid_run(tmp_path: Path, pg: PostgresServer) -> None:
    url = pg.create_database("fleet")
    db, store = tmp_path / "games.db", tmp_path / "objects"
    write_games(db, KEY, 40, seed=11)
    port = free_port()
    mapping = fleet_mapping(
        tmp_path, 0, db=db, configs=[KEY], pg_url=url, store=store,
        http={"enabled": True, "port": port},
        triggers={"bootstrap_min_games": 30, "freshness_threshold": 20},
        registry={"url": url, "store": str(store), "connect_timeout": 1, "pool_size": 2},
    )  # fmt: skip
    cfg = write_node_config(tmp_path, 0, mapping)
    data, log = tmp_path / "node0", tmp_path / "node.log"
    pg.stop_immediate()  # down before the node starts
    proc = start_service(cfg, log)
    try:
        # -- down at start: fail closed, keep serving -------------------------------------
        def alert() -> dict[str, Any] | None:
            assert proc.poll() is None, log_tails([log])
            try:
                return _registry_alert(_status(port))
            except OSError:  # the HTTP server is not up yet
                return None

        raised = wait_until(alert, 180, 0.2, "the registry_unavailable alert")
        assert raised["severity"] == "critical", raised
        assert f"127.0.0.1:{pg.port}/fleet" in raised["message"], raised
        decision = _status(port)["configs"][KEY]
        assert not decision["should_train"] and "registry unavailable" in decision["reason"], decision
        _assert_serving(port, cfg)
        assert node_runs(data) == [], "a run started without the registry"

        pg.start()  # back: the node trains v1, the alert resolves
        reg = ModelRegistry(tmp_path / "observer", url=url, store=str(store))
        with reg:
            wait_until(
                lambda: reg.get_latest(KEY) is not None and not alert(), 240, 0.2, "v1 and the alert resolved"
            )
        wait_until(lambda: all(r["state"] == "succeeded" for r in node_runs(data)), 120, 0.1, "v1's run")

        # -- down mid-run: the run fails at registration, the lock is released ----------------
        write_games(db, KEY, 30, seed=12)
        training = lambda: [r for r in node_runs(data) if r["state"] == "training"]  # noqa: E731
        wait_until(training, 240, 0.02, "the next run to train")
        stop_process(proc.pid)  # frozen while it trains: the server's stop lands mid-run
        pg.stop_immediate()
        os.kill(proc.pid, signal.SIGCONT)
        failed = wait_until(
            lambda: [r for r in node_runs(data) if r["state"] == "failed"], 240, 0.1, "the run to fail"
        )[0]
        assert failed["model_id"] is None and "registry database" in failed["message"], failed
        assert "unreachable" in failed["message"] or "failed" in failed["message"], failed
        wait_until(alert, 120, 0.2, "the registry_unavailable alert again")
        _assert_serving(port, cfg)

        pg.start()  # back: the same node trains the config again, no restart
        with reg:
            two = lambda: len(reg.list_models(config=KEY)) == 2  # noqa: E731
            wait_until(two, 240, 0.2, "v2 after the server returned")
            wait_until(lambda: not alert(), 120, 0.2, "the alert to resolve")
            models = reg.list_models(config=KEY)
            assert [m.version for m in models] == [1, 2] and models[1].parent_model_id == models[0].model_id
            assert reg.verify() == []
    finally:
        stop_service(proc)
    assert proc.returncode == 0, log_tails([log])
    states = [r["state"] for r in node_runs(data)]
    assert states == ["succeeded", "failed", "succeeded"], states
