"""Chaos: 3 service processes on one Redis, one repeatedly SIGSTOPped beyond the TTL.

The stopped node's run must end ``interrupted`` (its lease ran out while it was
frozen), never ``succeeded``; every config still trains; no model is registered
from a lost lease; per config, fencing tokens rise with registration time across
nodes and no two successful runs overlap.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

from daemon.selfplay_sim import write_games
from daemon.settings import settings_from_mapping
from tests.chaos._redis_helpers import assert_no_orphans, chaos_mapping, journal_rows, registry_rows
from tests.support.procs import stop_all
from tests.support.redis_server import RedisServer

CONFIGS = ["square8_2p", "square8_3p", "hex8_2p"]
TTL = 2.0
STOP_FOR = 3.0  # > TTL: the frozen node's lease expires in Redis
CYCLES = 3


def _start(tmp: Path, i: int, redis_url: str, db: Path, epochs: int) -> subprocess.Popen[bytes]:
    cfg = chaos_mapping(
        tmp,
        configs=CONFIGS,
        game_dbs=[str(db)],
        redis_url=redis_url,
        backend="redis",
        ttl=TTL,
        epochs=epochs,
        name=f"node{i}",
    )
    path = tmp / f"node{i}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = (tmp / f"node{i}.log").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        log.close()


def _runs(tmp: Path) -> list[dict[str, object]]:
    return [r | {"node": i} for i in range(3) for r in journal_rows(tmp / f"node{i}" / "state" / "runs.db")]


def test_sigstopped_node_never_registers_from_a_lost_lease(tmp_path: Path, redis_server: RedisServer) -> None:
    db = tmp_path / "games.db"
    for i, key in enumerate(CONFIGS):
        write_games(db, key, 40, seed=20 + i)
    # The victim trains slowly, so the freeze lands mid-run; the others train fast.
    procs = [_start(tmp_path, 0, redis_server.url, db, epochs=40)]
    try:
        deadline = time.monotonic() + 60
        trainers = tmp_path / "node0" / "state" / "trainers"
        while not list(trainers.glob("*.json")):
            assert time.monotonic() < deadline, "the victim never started a trainer"
            assert procs[0].poll() is None, "the victim exited"
            time.sleep(0.1)
        procs += [_start(tmp_path, i, redis_server.url, db, epochs=1) for i in (1, 2)]
        for _ in range(CYCLES):
            os.kill(procs[0].pid, signal.SIGSTOP)
            time.sleep(STOP_FOR)  # the fault itself: frozen for longer than the TTL
            os.kill(procs[0].pid, signal.SIGCONT)
            time.sleep(1.0)
        deadline = time.monotonic() + 90
        while True:
            done = {r["config"] for r in _runs(tmp_path) if r["state"] == "succeeded"}
            if done == set(CONFIGS):
                break
            assert time.monotonic() < deadline, f"configs never trained: {set(CONFIGS) - done}"
            assert all(p.poll() is None for p in procs), [p.poll() for p in procs]
            time.sleep(0.3)
    finally:
        stop_all(procs)
    logs = "\n".join((tmp_path / f"node{i}.log").read_text()[-2000:] for i in range(3))
    assert [p.returncode for p in procs] == [0, 0, 0], logs
    assert_no_orphans(tmp_path)

    runs = _runs(tmp_path)
    by_id = {r["run_id"]: r for r in runs}
    assert all(r["state"] in ("succeeded", "failed", "interrupted") for r in runs), runs
    # The run frozen mid-training lost its lease: interrupted, not succeeded.
    victim_first = min((r for r in runs if r["node"] == 0), key=lambda r: str(r["started_at"]))
    assert victim_first["state"] == "interrupted", victim_first
    assert "lease lost" in str(victim_first["message"]), victim_first

    models = [
        m | {"node": i}
        for i in range(3)
        for m in registry_rows(
            settings_from_mapping(
                chaos_mapping(tmp_path, configs=CONFIGS, game_dbs=[], name=f"node{i}"), {}
            ).registry_dir
            / "registry.db"
        )
    ]
    assert {m["config_key"] for m in models} == set(CONFIGS), models
    for m in models:
        run = by_id.get(m["run_id"])
        assert run is not None and run["state"] == "succeeded", (m, run)
        assert run["fencing_token"] == m["fencing_token"], (m, run)
    for key in CONFIGS:
        rows = sorted((m for m in models if m["config_key"] == key), key=lambda m: str(m["created_at"]))
        tokens = [int(m["fencing_token"]) for m in rows]
        assert all(a < b for a, b in itertools.pairwise(tokens)), (key, rows)
        spans = sorted(
            (datetime.fromisoformat(str(r["started_at"])), datetime.fromisoformat(str(r["finished_at"])))
            for r in runs
            if r["config"] == key and r["state"] == "succeeded"
        )
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, (key, spans)
