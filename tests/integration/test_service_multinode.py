"""Several service processes, one real redis-server: work is shared safely.

* 3 nodes, 4 configs with fresh data: every config trains exactly once, never two at once.
* ``kill -9`` of the node running a config: another node retrains it within TTL + one poll
  interval, and the killed run's trainer group is gone.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from daemon.selfplay_sim import write_games
from tests.support.procs import stop_all
from tests.support.redis_server import RedisServer

CONFIGS = ["square8_2p", "square8_3p", "hex8_2p", "hex8_3p"]
TTL = 3.0
POLL = 1.0


def node_config(tmp: Path, i: int, redis_url: str, db: Path, configs: list[str], epochs: int) -> Path:
    cfg: dict[str, Any] = {
        "data_dir": str(tmp / f"node{i}"),
        "game_dbs": [str(db)],
        "configs": configs,
        "redis": {"url": redis_url, "ttl": TTL, "key_prefix": "mn:"},
        "locks": {"backend": "redis"},
        "http": {"enabled": False},
        "schedule": {
            "poll_interval": POLL,
            "decide_interval": POLL,
            "health_interval": 5,
            "drain_timeout": 5,
        },
        "triggers": {"bootstrap_min_games": 40, "freshness_threshold": 100000, "min_interval": 3600},
        "training": {
            "epochs": epochs,
            "batch_size": 32,
            "channels": 4,
            "blocks": 1,
            "device": "cpu",
            "grace": 3,
        },
    }
    path = tmp / f"node{i}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_node(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "daemon", "run", "--config", str(cfg)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def runs(tmp: Path, nodes: int) -> list[dict[str, Any]]:
    out = []
    for i in range(nodes):
        db = tmp / f"node{i}" / "state" / "runs.db"
        if not db.exists():
            continue
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            for row in conn.execute("SELECT run_id, config, state, started_at, finished_at, pid FROM runs"):
                out.append(
                    dict(
                        zip(
                            ["run_id", "config", "state", "started_at", "finished_at", "pid"],
                            row,
                            strict=True,
                        )
                    )
                    | {"node": i}
                )
        except sqlite3.OperationalError:
            pass
        finally:
            conn.close()
    return out


def test_three_nodes_train_each_config_exactly_once(tmp_path: Path, redis_server: RedisServer) -> None:
    db = tmp_path / "games.db"
    for i, key in enumerate(CONFIGS):
        write_games(db, key, 60, seed=i)
    procs = [
        start_node(node_config(tmp_path, i, redis_server.url, db, CONFIGS, 1), tmp_path / f"n{i}.log")
        for i in range(3)
    ]
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            done = [r for r in runs(tmp_path, 3) if r["state"] == "succeeded"]
            if len({r["config"] for r in done}) == len(CONFIGS):
                break
            assert all(p.poll() is None for p in procs), "a node exited early"
            time.sleep(0.5)
        time.sleep(3 * POLL)  # give a duplicate run the chance to start, if one would
    finally:
        stop_all(procs)
    all_runs = runs(tmp_path, 3)
    logs = "\n".join((tmp_path / f"n{i}.log").read_text()[-3000:] for i in range(3))
    ok = [r for r in all_runs if r["state"] == "succeeded"]
    assert sorted(r["config"] for r in ok) == sorted(CONFIGS), (all_runs, logs)
    assert len({r["node"] for r in all_runs}) >= 2, "the work was not shared"
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
    # Never two at once: per config, no two runs overlap in time.
    for key in CONFIGS:
        spans = sorted(
            (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
            for r in all_runs
            if r["config"] == key and r["finished_at"]
        )
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, (key, spans)


def _pgid_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_killed_node_config_is_retrained_elsewhere(tmp_path: Path, redis_server: RedisServer) -> None:
    db = tmp_path / "games.db"
    write_games(db, "square8_2p", 120, seed=7)
    # Long enough training that the kill lands mid-run.
    procs = [
        start_node(
            node_config(tmp_path, i, redis_server.url, db, ["square8_2p"], 400), tmp_path / f"n{i}.log"
        )
        for i in range(2)
    ]
    victim = None
    try:
        deadline = time.monotonic() + 90
        record: dict[str, Any] | None = None
        while time.monotonic() < deadline and record is None:
            for i in range(2):
                for rec in (tmp_path / f"node{i}" / "state" / "trainers").glob("*.json"):
                    import json

                    record = json.loads(rec.read_text()) | {"node": i}
            time.sleep(0.2)
        assert record is not None, "no trainer started"
        victim = record["node"]
        pgid = int(record["pgid"])
        killed_at = time.monotonic()
        procs[victim].kill()  # SIGKILL: no drain, no release
        procs[victim].wait()
        other = 1 - victim
        taken = None
        while time.monotonic() - killed_at < TTL + POLL + 20:
            if any(r["node"] == other and r["state"] != "pending" for r in runs(tmp_path, 2)):
                taken = time.monotonic() - killed_at
                break
            time.sleep(0.1)
        assert taken is not None, "no other node picked the config up"
        assert taken <= TTL + POLL + 3.0, taken  # + slack for process start-up on a loaded 2-core box
        gone_deadline = time.monotonic() + 30
        while _pgid_alive(pgid) and time.monotonic() < gone_deadline:
            time.sleep(0.2)
        assert not _pgid_alive(pgid), "the killed node's trainer group survived"
    finally:
        stop_all(procs)
