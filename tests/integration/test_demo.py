"""``ringrift-daemon run --demo``: the whole loop, bounded, through the real CLI.

Synthetic self-play crosses the bootstrap threshold, a first model trains and is promoted at
once, a warm-started second model trains after the demo's interval, the demo plays it against
production with a known advantage and the promotion test accepts it. The writer stops at its
game budget, so the database stays small. Waits poll the log for events with generous bounds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.procs import stop_all

ROOT = Path(__file__).resolve().parents[2]
BOUND = 600.0  # seconds; a quiet 2-core machine needs about 2 minutes


def events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def wait_for(log: Path, proc: subprocess.Popen[bytes], pred: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        for e in events(log):
            if pred(e):
                return e
        assert proc.poll() is None, f"the demo exited ({proc.returncode}) before {what}"
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {BOUND} s")


@pytest.mark.timeout(BOUND * 3 + 180)
def test_demo_trains_warm_starts_and_promotes_on_evidence(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "data_dir: data\n"
        "game_dbs: ['data/games/*.db']\n"
        "configs: [square8_2p, hex8_2p]\n"
        "http: {host: 127.0.0.1, port: 0}\n"
        "schedule: {poll_interval: 1, decide_interval: 1, health_interval: 5, drain_timeout: 10}\n"
        "triggers: {freshness_threshold: 300, bootstrap_min_games: 100}\n"
        "training: {device: cpu, batch_size: 128, grace: 5}\n"
        "demo: {max_games: 600, rate: 50, min_interval: 5, epochs: 1, channels: 8,"
        " evaluation_batch: 50, evaluation_games: 400, candidate_elo: 200}\n"
    )
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_DAEMON_")}
    env["PYTHONPATH"] = str(ROOT)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(cfg), "--demo"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        first = wait_for(log, proc, lambda e: e.get("event") == "promotion.accepted", "first promotion")
        assert first["candidate"] == "square8_2p-v1" and first["decided_by"] == "bootstrap"
        second = wait_for(
            log,
            proc,
            lambda e: e.get("event") == "promotion.accepted" and e["candidate"] == "square8_2p-v2",
            "promotion of v2",
        )
        assert second["decided_by"] == "sprt" and second["production"] == "square8_2p-v1"
        assert second["llr"] > 0 and 0 < second["games"] <= 400
        wait_for(log, proc, lambda e: e.get("event") == "selfplay.stopped", "the writer's stop")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        stop_all([proc], timeout=120)
    seen = events(log)
    registered = [e for e in seen if e.get("event") == "registry.registered"]
    assert [e["model_id"] for e in registered][:2] == ["square8_2p-v1", "square8_2p-v2"]
    assert registered[1]["parent"] == "square8_2p-v1"  # warm-started from production
    stopped = next(e for e in seen if e.get("event") == "selfplay.stopped")
    assert stopped["written"] == 600
    # Nothing unhealthy at start: the demo's database exists before the first poll.
    assert not [e for e in seen if e.get("event") == "source.unhealthy"]
    # The promotion games (production losing to its successor) raise no low-win-rate alert.
    assert not [e for e in seen if e.get("event") == "alert.raised"], "the demo ends healthy"
    assert not [e for e in seen if str(e.get("logger", "")).startswith("apscheduler")]
    db = tmp_path / "data" / "games" / "demo.db"
    assert db.stat().st_size < 100 * 2**20
    assert proc.returncode == 0
