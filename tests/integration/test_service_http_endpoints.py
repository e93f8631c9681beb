"""``GET /models/{config}`` and ``GET /evaluation`` against a real service process.

A real SQLite registry holds a production model and a newer candidate; the game database holds
a few evaluation games between them, not enough to decide. The service (``run``, HTTP on a free
loopback port) must serve the registry's view of both models and the open test, the same pairs
``evaluation pending --json`` prints.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.registry import ModelRegistry
from daemon.selfplay_sim import write_evaluation_games, write_games
from tests.chaos._helpers import (
    kill_test_processes,
    node_mapping,
    run_cli,
    settings_of,
    sha256_of,
    start_service,
    stop_service,
    wait_until,
    write_config,
)
from tests.support.redis_server import free_port

KEY, OTHER = "square8_2p", "hex8_2p"
BOUND = 240.0
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_test_processes(tmp_path)


def _get(port: int, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_models_and_evaluation_endpoints(tmp_path: Path) -> None:
    db = tmp_path / "games.db"
    write_games(db, KEY, 30, seed=1)
    port = free_port()
    data = node_mapping(
        tmp_path,
        db,
        [KEY, OTHER],
        http={"enabled": True, "host": "127.0.0.1", "port": port},
        triggers={"bootstrap_min_games": 100000},  # nothing trains: the registry stays as made
    )
    settings = settings_of(data)
    for i in (1, 2):
        (tmp_path / f"m{i}.pt").write_bytes(f"model {i}".encode() * 100)
    with ModelRegistry(settings.registry_dir) as reg:
        v1 = reg.register(tmp_path / "m1.pt", "square8", 2)
        reg.promote(v1, reason="test")
        v2 = reg.register(tmp_path / "m2.pt", "square8", 2, parent_model_id=v1)
    write_evaluation_games(db, KEY, 12, candidate=v2, production=v1, elo_diff=0.0, seed=5)
    config = write_config(tmp_path, data)
    proc = start_service(config, tmp_path / "service.log")
    try:

        def pending() -> Any:
            try:
                status, body = _get(port, "/evaluation")
            except OSError:
                return None  # not bound yet
            return body if status == 200 and body["pending"] else None

        evaluation = wait_until(pending, BOUND, 0.2, "/evaluation to list the open test")
        status, models = _get(port, f"/models/{KEY}")
        assert status == 200, models
        assert models["config"] == KEY
        prod, cand = models["production"], models["candidate"]
        assert (prod["id"], prod["version"], prod["stage"]) == (v1, 1, "production")
        assert (cand["id"], cand["version"], cand["stage"], cand["parent"]) == (v2, 2, "candidate", v1)
        for rec, src in ((prod, tmp_path / "m1.pt"), (cand, tmp_path / "m2.pt")):
            assert rec["sha256"] == sha256_of(src) and rec["size"] == src.stat().st_size
            assert Path(rec["path"]).is_file() and sha256_of(Path(rec["path"])) == rec["sha256"]
            assert rec["status"] == "ready" and rec["created_at"]
        empty = {"config": OTHER, "production": None, "candidate": None}
        assert _get(port, f"/models/{OTHER}") == (200, empty)
        status, missing = _get(port, "/models/square19_4p")
        assert status == 404 and "not enabled" in missing["error"]
        status, _ = _get(port, "/models/..%2F..%2Fetc")
        assert status == 404

        (row,) = evaluation["pending"]
        assert (row["config"], row["candidate"], row["production"], row["games"]) == (KEY, v2, v1, 12)
        assert row["expected_games"] > 0 and row["lower"] < row["llr"] < row["upper"]
        assert evaluation["mode"] == settings.promotion.mode
    finally:
        stop_service(proc, timeout=BOUND)
    assert proc.returncode == 0
    # The endpoint and the CLI agree (the CLI recomputes from the same databases).
    cli = run_cli(["evaluation", "pending", "--json", "--config", str(config)], timeout=BOUND)
    assert cli.returncode == 0, cli.stderr
    printed = json.loads(cli.stdout.strip().splitlines()[-1])
    assert [(p["config"], p["candidate"], p["production"], p["games"]) for p in printed["pending"]] == [
        (KEY, v2, v1, 12)
    ]
