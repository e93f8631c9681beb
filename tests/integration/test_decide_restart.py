"""Restart: build state, drop every object, rebuild from the SQLite store."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.decide.curriculum import CurriculumFeedback
from daemon.decide.health import TrainingHealthMonitor
from daemon.decide.store import DecideStore
from daemon.decide.triggers import TrainingTriggers
from daemon.keys import ALL_CONFIG_KEYS

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _build(db: Path) -> None:
    with CurriculumFeedback(db) as cf, TrainingHealthMonitor(db) as hm, DecideStore(db) as store:
        tr = TrainingTriggers(store=store).open()
        for i, key in enumerate(ALL_CONFIG_KEYS):
            for g in range(30):
                cf.record_game(
                    key, 1 if (g + i) % 3 else -1, 1500 - g * i, now=T0 - timedelta(seconds=60 * g)
                )
            if i % 2:
                cf.record_training(key, now=T0 - timedelta(hours=i), model_count=i)
            m = cf.get_config_metrics(key, now=T0)
            tr.update_config_state(
                key,
                games_count=100 * i,
                new_games=60 * i,
                win_rate=m.win_rate,
                model_count=m.model_count,
                last_training_time=m.last_training_time,
                curriculum_weight=cf.get_weight(key, now=T0),
            )
        hm.record_training_start("square8_2p", now=T0, run_id="run-inflight")
        for j in range(3):
            hm.record_training_complete(
                "hex8_3p", success=False, now=T0 + timedelta(minutes=j), message="oom"
            )
        hm.set_condition(None, "source_unhealthy", active=True, message="/db: corrupt", now=T0, subject="/db")
        hm.record_win_rate("hexagonal_4p", win_rate=0.1, now=T0)
        tr.close()


def _observe(db: Path, now: datetime) -> tuple[object, ...]:
    with CurriculumFeedback(db) as cf, TrainingHealthMonitor(db) as hm, DecideStore(db) as store:
        tr = TrainingTriggers(store=store).open()
        out = (
            cf.get_curriculum_weights(now=now),
            {k: cf.get_config_metrics(k, now=now) for k in ALL_CONFIG_KEYS},
            {k: tr.should_train(k, now=now) for k in ALL_CONFIG_KEYS},
            [d.config_key for d in tr.get_training_queue(now=now)],
            hm.get_health_status(now=now),
            hm.snapshot(now=now),
        )
        tr.close()
        return out


def test_rebuild_gives_same_weights_decisions_alerts(tmp_path: Path) -> None:
    db = tmp_path / "state" / "decide.db"
    _build(db)
    first = _observe(db, T0)
    assert _observe(db, T0) == first
    weights, _, decisions, queue, report, _ = first
    assert set(weights.values()) - {1.0} and queue  # non-trivial state
    assert [k for k, d in decisions.items() if d.should_train] == sorted(queue, key=list(decisions).index)
    kinds = {(a.config, a.kind, a.severity) for a in report.active_alerts}  # type: ignore[attr-defined]
    assert kinds == {
        ("hex8_3p", "consecutive_failures", "critical"),
        (None, "source_unhealthy", "warning"),
        ("hexagonal_4p", "low_win_rate", "warning"),
    }


def test_inflight_run_survives_restart_and_stalls(tmp_path: Path) -> None:
    db = tmp_path / "decide.db"
    _build(db)
    with TrainingHealthMonitor(db) as hm:
        assert hm.snapshot(now=T0 + timedelta(hours=1))["configs"]["square8_2p"]["is_running"] is True
        assert hm.evaluate(now=T0 + timedelta(hours=3)) == []
    with TrainingHealthMonitor(db) as hm:
        changes = hm.evaluate(now=T0 + timedelta(hours=4, minutes=1))
        assert [(c.alert.config, c.alert.kind) for c in changes] == [("square8_2p", "stalled_training")]
    with TrainingHealthMonitor(db) as hm:  # the raised alert itself persisted
        report = hm.get_health_status(now=T0 + timedelta(hours=5))
        stalled = [a for a in report.active_alerts if a.kind == "stalled_training"]
        assert stalled and stalled[0].since == T0 + timedelta(hours=4, minutes=1)
        assert report.status == "unhealthy"


def test_store_is_wal_and_connections_close(tmp_path: Path) -> None:
    db = tmp_path / "decide.db"
    store = DecideStore(db).open()
    assert store.query("PRAGMA journal_mode")[0][0] == "wal"
    store.close()
    store.close()  # idempotent
    conn = sqlite3.connect(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"curriculum_results", "health_alerts", "trigger_state", "ingested_games"} <= tables


def test_two_monitors_share_one_file(tmp_path: Path) -> None:
    db = tmp_path / "decide.db"
    with TrainingHealthMonitor(db) as a, CurriculumFeedback(db) as b:
        a.record_training_start("square8_3p", now=T0)
        b.record_game("square8_3p", 1, 1500, now=T0)
    with TrainingHealthMonitor(db) as a:
        assert a.snapshot(now=T0)["configs"]["square8_3p"]["is_running"]
