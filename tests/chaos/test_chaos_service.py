"""``kill -9`` of the service during export, training and registration, then a restart on the
same data dir.

The service runs as a real process; the test polls its journal (read-only) at high frequency
and freezes it (SIGSTOP) the moment the run reaches the step, then SIGKILLs it. The restart is
the real :class:`Service` started in-process on the same data dir, so the test can look
between its recovery and its next run: the in-flight run is ``interrupted``, the orphan trainer
group is gone, a consecutive-failures alert is raised, and the config then trains exactly once.
A kill after the registry committed but before the journal did must count as a success.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.selfplay_sim import write_games
from daemon.service.app import build_app
from daemon.service.evaluator import alert_dict
from daemon.service.supervisor import Service
from tests.chaos._helpers import (
    RegistryWatch,
    assert_no_orphans,
    assert_no_torn_files,
    assert_registry_matches_journal,
    bounded,
    child_environ,
    failure_alert,
    freeze_at_state,
    journal_runs,
    journal_write_lock,
    kill_test_processes,
    node_mapping,
    orphan_trainers,
    pid_alive,
    registry_rows,
    settings_of,
    sha256_of,
    start_service,
    stop_process,
    stop_service,
    trainer_records,
    wait_until,
    write_config,
)

KEY, OTHER = "square8_2p", "hex8_2p"
RUN_BOUND = 60.0  # a run takes ~5-15 s here; a stuck one fails the test, not the suite


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_test_processes(tmp_path)  # only after a failure is there anything left to end


def _kill_mid_step(tmp_path: Path, step: str) -> tuple[dict[str, Any], str, dict[str, int] | None]:
    """Start the service, SIGKILL it at ``step``; return (settings mapping, run_id, trainer pid/pgid)."""
    db = tmp_path / "games.db"
    write_games(db, KEY, 70, seed=1)
    write_games(db, OTHER, 20, seed=2)  # below the bootstrap minimum: decided on, never trained
    data = node_mapping(tmp_path, db, [KEY, OTHER])
    settings = settings_of(data)
    log = tmp_path / "service1.log"
    proc = start_service(write_config(tmp_path, data), log)
    trainer: dict[str, int] | None = None
    try:
        run_id, seen = freeze_at_state(proc, settings, step.replace("registered", "registering"), 60)
        assert seen == step.replace("registered", "registering"), f"froze too late: run {run_id} is {seen}"
        if step == "registered":
            # Land the kill after the registry's commit but before the journal's final write:
            # hold the journal's write lock, let the service run until the model row is
            # committed (its journal write then waits on the lock), and kill it there.
            committed = RegistryWatch(settings)
            try:
                with journal_write_lock(settings):
                    proc.send_signal(signal.SIGCONT)
                    wait_until(committed, 30, 0.001, "the registry to commit the model")
                    stop_process(proc.pid)
            finally:
                committed.close()
        if step == "training":
            # Let it spawn the trainer, then kill the service: the trainer is left orphaned.
            proc.send_signal(signal.SIGCONT)
            rec = wait_until(lambda: trainer_records(settings), 30, 0.02, "the trainer's pid record")[0]
            trainer = {"pid": int(rec["pid"]), "pgid": int(rec["pgid"])}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop_service(proc)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    killed = {r["run_id"]: r for r in journal_runs(settings)}[run_id]
    assert killed["state"] == seen, killed  # the journal shows the run in flight, as left
    return data, run_id, trainer


@pytest.mark.parametrize("step", ["exporting", "training", "registering"])
async def test_service_kill9_mid_step_then_restart(tmp_path: Path, step: str) -> None:
    data, run_id, trainer = _kill_mid_step(tmp_path, step)
    settings = settings_of(data)

    # Restart on the same data dir.
    service = Service(build_app(settings, child_environ()), handle_signals=False)
    await service.start()  # recovery: reap orphan trainers, resolve in-flight runs
    try:
        rec = service.app.journal.get(run_id)
        assert rec is not None and rec.state == "interrupted", rec
        assert step in (rec.message or ""), rec.message
        assert_no_orphans(tmp_path, settings)
        if trainer is not None:
            assert not pid_alive(trainer["pid"]), "the killed service's trainer survived"
        now = datetime.now(UTC)
        alert = failure_alert(_alerts(service, now), KEY)
        assert alert is not None and alert["severity"] == "warning", _alerts(service, now)

        # The config trains again (after its backoff: time is an argument), exactly once.
        later = datetime.now(UTC) + timedelta(seconds=settings.triggers.min_interval + 1)
        report = await service.tick(later)
        assert report.dispatched == [KEY], {k: d.reason for k, d in report.decisions.items()}
        assert report.decisions[OTHER].should_train is False and "bootstrap" in report.decisions[OTHER].reason
        results = await bounded(service.wait_runs(), RUN_BOUND, "the runs", tmp_path)
        assert [r.success for r in results] == [True], [r.message for r in results]
        report = await service.tick(later + timedelta(seconds=settings.triggers.min_interval + 1))
        assert report.dispatched == [], {k: d.reason for k, d in report.decisions.items()}
        assert failure_alert(_alerts(service, datetime.now(UTC)), KEY) is None
    finally:
        kill_test_processes(tmp_path)  # a no-op unless a step got stuck: unblocks the drain
        await service.drain()
        await service.close()

    runs = journal_runs(settings)
    assert [r["state"] for r in runs if r["config"] == KEY] == ["interrupted", "succeeded"], runs
    rows = registry_rows(settings)
    assert [r["model_id"] for r in rows] == [f"{KEY}-v1"], rows
    assert rows[0]["run_id"] == runs[-1]["run_id"]
    assert_registry_matches_journal(settings)
    assert_no_torn_files(settings)
    # A checkpoint the killed run's trainer saved on its way out is never registered.
    for ckpt in (settings.runs_dir / run_id).glob("*.pt"):
        assert sha256_of(ckpt) not in {r["sha256"] for r in rows}
    assert orphan_trainers(tmp_path) == []


async def test_service_kill9_after_registry_commit_then_restart(tmp_path: Path) -> None:
    """Killed between the registry's commit and the journal's: the model is real and fenced, so
    the restarted daemon records the run as succeeded (no false alert, no second training)."""
    data, run_id, _ = _kill_mid_step(tmp_path, "registered")
    settings = settings_of(data)
    service = Service(build_app(settings, child_environ()), handle_signals=False)
    await service.start()
    try:
        rec = service.app.journal.get(run_id)
        assert rec is not None and rec.state == "succeeded" and rec.model_id == f"{KEY}-v1", rec
        assert failure_alert(_alerts(service, datetime.now(UTC)), KEY) is None, _alerts(
            service, datetime.now(UTC)
        )
        later = datetime.now(UTC) + timedelta(seconds=settings.triggers.min_interval + 1)
        report = await service.tick(later)
        assert report.dispatched == [], {k: d.reason for k, d in report.decisions.items()}
        assert "0 new games" in report.decisions[KEY].reason, report.decisions[KEY].reason
    finally:
        kill_test_processes(tmp_path)
        await service.drain()
        await service.close()
    assert [r["state"] for r in journal_runs(settings)] == ["succeeded"]
    assert_registry_matches_journal(settings)
    assert_no_torn_files(settings)
    assert_no_orphans(tmp_path, settings)


def _alerts(service: Service, now: datetime) -> list[dict[str, Any]]:
    return [alert_dict(a) for a in service.app.health.get_health_status(now=now).active_alerts]
