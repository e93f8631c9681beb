"""Leftovers a run or a stop must not leave (issue 17 item 13): run directories, alerts of
sources no longer configured, a failure alert for an operator stop; a newer schema is told.

Real SQLite files, the real service (in-process for the tick-driven checks, a child process
for the SIGTERM during training), the real trainer.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.selfplay_sim import write_games
from daemon.service.app import build_app
from daemon.service.supervisor import Service
from tests.chaos._helpers import (
    active_alerts,
    assert_no_orphans,
    assert_registry_matches_journal,
    child_environ,
    failure_alert,
    journal_runs,
    kill_test_processes,
    node_mapping,
    registry_rows,
    settings_of,
    start_service,
    wait_until,
    write_config,
)

KEY = "square8_2p"
BOUND = 300.0  # generous: the machine is shared; waits poll for a state


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_test_processes(tmp_path)


def _old_run_dir(runs: Path, n: int) -> Path:
    d = runs / f"{KEY}-2026010{n}T000000-0000000{n}"
    d.mkdir(parents=True)
    (d / "model.pt").write_bytes(b"x" * 1024)
    t = datetime(2026, 1, n, tzinfo=UTC).timestamp()
    os.utime(d, (t, t))
    return d


async def test_registered_run_dir_removed_and_failed_ones_bounded(tmp_path: Path) -> None:
    db = tmp_path / "games.db"
    write_games(db, KEY, 50, seed=1)
    settings = settings_of(node_mapping(tmp_path, db, [KEY], training={"keep_failed_runs": 2}))
    runs = settings.runs_dir
    old = [_old_run_dir(runs, n) for n in (1, 2, 3)]  # three earlier runs that did not register
    keep = runs / "operator-notes"  # not a run id: never touched
    keep.mkdir()
    app = build_app(settings, child_environ())
    await app.start()
    try:
        result = await app.pipeline.run_training(KEY)
    finally:
        await app.close()
    assert result.success, result.message
    assert result.run_id is not None
    assert not (runs / result.run_id).exists(), "a registered run's model.pt copy was kept"
    (row,) = registry_rows(settings)
    assert (settings.registry_dir / "objects" / "sha256" / f"{row['sha256']}.pt").is_file()
    # keep_failed_runs 2: the newest two of the earlier runs stay, the oldest went.
    assert sorted(p.name for p in runs.iterdir()) == sorted([old[1].name, old[2].name, keep.name])


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not a database" * 100)


def _schema(db: Path, version: int) -> None:
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_metadata SET value=? WHERE key='schema_version'", (str(version),))
    conn.commit()
    conn.close()


async def _tick(settings_data: dict[str, object], now: datetime) -> Service:
    service = Service(build_app(settings_of(settings_data), child_environ()), handle_signals=False)
    await service.start()
    try:
        await service.tick(now)
    finally:
        await service.drain()
        await service.close()
    return service


async def test_alert_of_a_removed_source_resolves_and_a_newer_schema_is_told(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.db", tmp_path / "bad.db"
    write_games(good, KEY, 10, seed=1)
    _schema(good, 99)
    _corrupt(bad)
    no_training = {"bootstrap_min_games": 100000}
    data = node_mapping(tmp_path, good, [KEY], triggers=no_training)
    data["game_dbs"] = [str(good), str(bad)]
    settings = settings_of(data)
    now = datetime.now(UTC)
    with capture_logs() as logs:
        await _tick(data, now)
    sources = [a for a in active_alerts(settings, now) if a["kind"] == "source_unhealthy"]
    assert len(sources) == 1 and sources[0]["message"].startswith(str(bad)), sources
    told = [e for e in logs if e["event"] == "source.warning"]
    assert told and told[0]["source"] == str(good) and "schema_version 99" in told[0]["warnings"][0], told

    data["game_dbs"] = [str(good)]  # the operator removes the bad source and restarts
    await _tick(data, now)
    left = [a for a in active_alerts(settings, now) if a["kind"] == "source_unhealthy"]
    assert left == [], f"the alert of a source no longer configured is still active: {left}"


@pytest.mark.timeout(900)  # a real service and trainer on a loaded machine; waits poll for states
def test_service_stop_during_training_is_not_a_failure(tmp_path: Path) -> None:
    db = tmp_path / "games.db"
    write_games(db, KEY, 60, seed=1)
    # Many epochs: the run is still training when the drain (drain_timeout 2 s) stops it.
    data = node_mapping(tmp_path, db, [KEY], training={"epochs": 100000}, schedule={"drain_timeout": 2})
    settings = settings_of(data)
    cfg = write_config(tmp_path, data)
    proc = start_service(cfg, tmp_path / "service.log")
    try:
        wait_until(
            lambda: [r["state"] for r in journal_runs(settings)] == ["training"],
            BOUND,
            0.2,
            "the run to be training",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=BOUND) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (run,) = journal_runs(settings)
    assert run["state"] == "interrupted" and "service stopping" in run["message"], run
    alert = failure_alert(active_alerts(settings), KEY)
    assert alert is None, f"an operator stop left a failure alert: {alert}"
    assert registry_rows(settings) == []
    assert_registry_matches_journal(settings)
    assert_no_orphans(tmp_path, settings)
