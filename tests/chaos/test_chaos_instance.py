"""One service per data directory (DESIGN 13): a second ``run`` / ``run --once`` on the same data
directory is refused before recovery and touches nothing; a restart under another host name (a
rescheduled pod) resolves the runs its predecessor left.

Real service processes, real trainers, the real journal (read-only from the test).
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.cli.exits import EXIT_ALREADY_RUNNING
from daemon.selfplay_sim import write_games
from tests.chaos._helpers import (
    REPO,
    assert_no_orphans,
    child_environ,
    journal_runs,
    kill_test_processes,
    node_mapping,
    pid_alive,
    run_cli,
    settings_of,
    start_service,
    stop_service,
    trainer_records,
    wait_until,
    write_config,
)

KEY = "square8_2p"
BOUND = 240.0  # generous: the machine is shared and loaded
pytestmark = pytest.mark.timeout(900)  # real services and trainers on a loaded machine


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_test_processes(tmp_path)


def _training(settings_data: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    settings = settings_of(settings_data)  # type: ignore[arg-type]

    def live() -> tuple[dict[str, object], dict[str, object]] | None:
        try:
            runs = [r for r in journal_runs(settings) if r["state"] == "training"]
        except sqlite3.OperationalError:  # the journal's schema is not created yet
            return None
        recs = [r for r in trainer_records(settings) if "pid" in r and pid_alive(int(r["pid"]))]
        return (runs[0], recs[0]) if runs and recs else None

    got = wait_until(live, BOUND, 0.1, "a run training with a live trainer")
    assert isinstance(got, tuple)
    return got


def test_second_instance_is_refused_and_touches_nothing(tmp_path: Path) -> None:
    db = tmp_path / "games.db"
    write_games(db, KEY, 70, seed=1)
    # Many epochs: the first service's trainer stays busy while the second one tries to start.
    data = node_mapping(tmp_path, db, [KEY], training={"epochs": 400, "timeout": 3600})
    config = write_config(tmp_path, data)
    first = start_service(config, tmp_path / "first.log")
    try:
        run, trainer = _training(data)
        for extra in ([], ["--once"]):
            second = run_cli(["run", "--config", str(config), *extra], timeout=BOUND)
            assert second.returncode == EXIT_ALREADY_RUNNING, (extra, second.returncode, second.stderr)
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1, second.stderr
            assert lines[0].startswith("error: another service already runs on this data directory")
            assert f"pid {first.pid}" in lines[0], lines[0]
            # The first service's trainer and run are untouched.
            assert pid_alive(int(trainer["pid"])), f"second instance {extra} ended the live trainer"
            now = {r["run_id"]: r for r in journal_runs(settings_of(data))}
            assert now[run["run_id"]]["state"] == "training", now[run["run_id"]]
        assert first.poll() is None
    finally:
        stop_service(first, timeout=BOUND)
    assert first.returncode == 0
    assert_no_orphans(tmp_path, settings_of(data), timeout=BOUND)
    # The lock went with the first service: a new one starts (and resolves nothing twice).
    again = run_cli(["run", "--config", str(config), "--once"], timeout=BOUND * 2)
    assert again.returncode == 0, again.stderr[-2000:]


def _service_as_host(config: Path, log: Path, host: str) -> subprocess.Popen[bytes]:
    """``run`` in a child whose host name reads ``host`` (what a rescheduled pod sees)."""
    code = (
        f"import socket\nsocket.gethostname = lambda: {host!r}\n"
        f"from daemon.cli import main\nraise SystemExit(main(['run', '--config', {str(config)!r}]))\n"
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, env=child_environ(), cwd=REPO
        )


def test_restart_under_another_host_name_resolves_the_killed_run(tmp_path: Path) -> None:
    db = tmp_path / "games.db"
    write_games(db, KEY, 70, seed=1)
    data = node_mapping(tmp_path, db, [KEY], training={"epochs": 400, "timeout": 3600})
    settings = settings_of(data)
    config = write_config(tmp_path, data)
    old = _service_as_host(config, tmp_path / "old.log", "old-pod-7f9c")
    try:
        run, _ = _training(data)
        old.send_signal(signal.SIGKILL)
        old.wait(timeout=BOUND)
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()
    rows = {r["run_id"]: r for r in journal_runs(settings)}
    assert rows[run["run_id"]]["state"] == "training"
    # The new pod: another host name (this machine's own), same data directory.
    before = json.loads(run_cli(["status", "--config", str(config), "--json"], timeout=BOUND).stdout)
    assert (before["configs"][KEY].get("run") or {}).get("state") == "training", before["configs"][KEY]
    restart = run_cli(["run", "--config", str(config), "--once"], timeout=BOUND * 2)
    assert restart.returncode == 0, restart.stderr[-2000:]
    after = {r["run_id"]: r for r in journal_runs(settings)}
    left = after[run["run_id"]]
    assert left["state"] == "interrupted", left
    assert "interrupted" in str(left["message"])
    assert all(r["state"] not in ("training", "exporting", "registering") for r in after.values()), after
    assert_no_orphans(tmp_path, settings, timeout=BOUND)
    report = run_cli(["status", "--config", str(config), "--json"], timeout=BOUND)
    assert report.returncode == 0, report.stderr
    shown = json.loads(report.stdout)["configs"][KEY]
    assert shown.get("run") is None, shown.get("run")  # status no longer shows it running
