"""Health monitor: every alert raises, escalates and resolves; status; exposition."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from daemon.decide.exposition import HealthCollector
from daemon.decide.health import HealthConfig, TrainingHealthMonitor
from daemon.settings import HealthSettings

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
KEY = "square19_3p"


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def mon(tmp_path: Path) -> Iterator[TrainingHealthMonitor]:
    with TrainingHealthMonitor(tmp_path / "decide.db") as m:
        yield m


def kinds(m: TrainingHealthMonitor, now: datetime) -> dict[tuple[str | None, str], str]:
    return {(a.config, a.kind): a.severity for a in m.get_health_status(now=now).active_alerts}


def test_summary_counts_the_enabled_configs(tmp_path: Path) -> None:
    # One config enabled, nothing recorded yet: "1 configs tracked", not 0.
    with TrainingHealthMonitor(tmp_path / "decide.db", configs=[KEY]) as m:
        assert m.get_health_status(now=T0).summary == "no active alerts (1 configs tracked)"


def test_healthy_when_nothing(mon: TrainingHealthMonitor) -> None:
    r = mon.get_health_status(now=T0)
    assert (r.status, r.active_alerts) == ("healthy", [])
    assert "no active alerts" in r.summary


def test_stalled_training_raise_and_resolve(mon: TrainingHealthMonitor) -> None:
    mon.record_training_start(KEY, now=T0, run_id="run-1")
    assert mon.evaluate(now=h(4)) == []  # exactly 4 h is not > 4 h
    with capture_logs() as logs:
        changes = mon.evaluate(now=h(4.5))
    assert [(c.action, c.alert.kind, c.alert.severity) for c in changes] == [
        ("raised", "stalled_training", "critical")
    ]
    assert (
        logs[0]["event"] == "alert.raised"
        and logs[0]["config"] == KEY
        and logs[0]["kind"] == "stalled_training"
    )
    assert logs[0]["severity"] == "critical" and "run-1" in logs[0]["message"]
    r = mon.get_health_status(now=h(4.5))
    assert (
        r.status == "unhealthy" and r.active_alerts[0].message == "training running 4.5 h > 4.0 h (run run-1)"
    )
    with capture_logs() as logs:
        mon.record_training_complete(KEY, success=True, now=h(5))
    assert "stalled_training" not in {k for _, k in kinds(mon, h(5))}
    assert [(e["event"], e["kind"]) for e in logs] == [("alert.resolved", "stalled_training")]


def test_consecutive_failures_escalate_and_clear(mon: TrainingHealthMonitor) -> None:
    for i, expected in enumerate(["warning", "warning", "critical", "critical"]):
        mon.record_training_start(KEY, now=h(i))
        mon.record_training_complete(KEY, success=False, now=h(i + 0.1), message=f"boom {i}")
        assert kinds(mon, h(i + 0.2))[(KEY, "consecutive_failures")] == expected
    msg = [
        a.message for a in mon.get_health_status(now=h(4)).active_alerts if a.kind == "consecutive_failures"
    ]
    assert msg == ["4 consecutive failed run(s): boom 3"]
    with capture_logs() as logs:
        mon.record_training_complete(KEY, success=True, now=h(5))
    assert (KEY, "consecutive_failures") not in kinds(mon, h(5))
    assert [(e["event"], e["kind"]) for e in logs] == [("alert.resolved", "consecutive_failures")]


def test_escalation_logs_one_raise_per_severity(mon: TrainingHealthMonitor) -> None:
    with capture_logs() as logs:
        for i in range(4):
            mon.record_training_complete(KEY, success=False, now=h(i))
    raised = [(e["severity"], e.get("previous_severity")) for e in logs if e["event"] == "alert.raised"]
    assert raised == [("warning", None), ("critical", "warning")]


def test_stale_model_and_data(mon: TrainingHealthMonitor) -> None:
    mon.record_training_complete(KEY, success=True, now=T0)
    mon.record_data_update(KEY, game_count=100, now=T0)
    mon.evaluate(now=h(12))
    assert kinds(mon, h(12)) == {}
    mon.evaluate(now=h(12.5))
    assert kinds(mon, h(12.5)) == {(KEY, "stale_data"): "warning"}
    mon.record_data_update(KEY, game_count=150, now=h(13))
    assert kinds(mon, h(13)) == {}
    mon.evaluate(now=h(24.5))
    assert kinds(mon, h(24.5)) == {(KEY, "stale_model"): "warning"}
    assert mon.get_health_status(now=h(24.5)).status == "degraded"
    mon.record_training_complete(KEY, success=True, now=h(25))
    assert kinds(mon, h(25)) == {}


def test_stale_model_without_any_success_counts_from_first_seen(mon: TrainingHealthMonitor) -> None:
    mon.record_data_update(KEY, game_count=1, now=T0)
    for t in (6, 11.9, 18, 23.9):
        mon.record_data_update(KEY, game_count=int(t), now=h(t))
    assert kinds(mon, h(24.1)) == {(KEY, "stale_model"): "warning"}


def test_low_win_rate(mon: TrainingHealthMonitor) -> None:
    mon.record_win_rate(KEY, win_rate=0.35, now=T0)
    assert kinds(mon, T0) == {}
    with capture_logs() as logs:
        mon.record_win_rate(KEY, win_rate=0.2, now=T0)
        mon.record_win_rate(KEY, win_rate=0.5, now=T0)
    assert [e["event"] for e in logs] == ["alert.raised", "alert.resolved"]
    with pytest.raises(ValueError):
        mon.record_win_rate(KEY, win_rate=2.0, now=T0)


def test_external_condition(mon: TrainingHealthMonitor) -> None:
    with capture_logs() as logs:
        mon.set_condition(
            None, "source_unhealthy", active=True, message="/x.db: corrupt", now=T0, subject="/x.db"
        )
        mon.set_condition(
            None, "source_unhealthy", active=True, message="/x.db: corrupt", now=h(1), subject="/x.db"
        )
        mon.set_condition(
            "hex8_2p", "lock_unavailable", active=True, severity="critical", message="redis down", now=T0
        )
    assert [e["event"] for e in logs] == ["alert.raised", "alert.raised"]
    r = mon.get_health_status(now=h(2))
    assert r.status == "unhealthy"
    assert {(a.config, a.kind, a.subject) for a in r.active_alerts} == {
        (None, "source_unhealthy", "/x.db"),
        ("hex8_2p", "lock_unavailable", None),
    }
    assert mon.evaluate(now=h(2)) == []  # evaluate does not touch external alerts
    mon.set_condition(None, "source_unhealthy", active=False, message="recovered", now=h(3), subject="/x.db")
    mon.set_condition("hex8_2p", "lock_unavailable", active=False, now=h(3))
    assert mon.get_health_status(now=h(3)).status == "healthy"
    with pytest.raises(ValueError):
        mon.set_condition(KEY, "stale_data", active=True, now=T0)


def test_since_is_kept_while_active(mon: TrainingHealthMonitor) -> None:
    mon.record_training_start(KEY, now=T0)
    mon.evaluate(now=h(5))
    (a,) = mon.get_health_status(now=h(6)).active_alerts
    assert a.since == h(5) and "6.0 h" in a.message


def test_status_read_is_pure(mon: TrainingHealthMonitor) -> None:
    mon.record_training_start(KEY, now=T0)
    r1 = mon.get_health_status(now=h(5))
    assert r1.status == "unhealthy"
    assert mon.store.alerts() == []  # reading did not persist anything
    assert mon.get_health_status(now=h(5)) == r1


def test_prometheus_exposition_parses(mon: TrainingHealthMonitor) -> None:
    mon.record_training_start(KEY, now=T0)
    mon.record_training_complete("hex8_2p", success=False, now=T0, model_count=3)
    mon.record_win_rate("hex8_2p", win_rate=0.3, now=T0)
    mon.evaluate(now=h(5))
    text = mon.get_prometheus_metrics(now=h(5))
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "ringrift_training_is_running",
        "ringrift_training_consecutive_failures",
        "ringrift_training_model_count",
        "ringrift_training_win_rate",
        "ringrift_training_alerts_critical",
        "ringrift_training_alerts_warning",
        "ringrift_training_alert",
    ):
        assert name in fams and fams[name].type == "gauge" and fams[name].documentation
        assert f"# HELP {name} " in text and f"# TYPE {name} gauge" in text
    val = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert val[("ringrift_training_is_running", (("config", KEY),))] == 1.0
    assert val[("ringrift_training_consecutive_failures", (("config", "hex8_2p"),))] == 1.0
    assert val[("ringrift_training_model_count", (("config", "hex8_2p"),))] == 3.0
    assert val[("ringrift_training_win_rate", (("config", "hex8_2p"),))] == 0.3
    assert val[("ringrift_training_alerts_critical", ())] == 1.0
    assert val[("ringrift_training_alerts_warning", ())] == 2.0  # failures + low win rate


def test_collector_on_injected_registry(mon: TrainingHealthMonitor) -> None:
    reg = CollectorRegistry()
    reg.register(HealthCollector(mon.snapshot, clock=lambda: T0))
    assert b"ringrift_training_alerts_warning 0.0" in generate_latest(reg)


def test_from_settings() -> None:
    cfg = HealthConfig(stalled_after=60, failures_critical=5)
    assert HealthConfig is HealthSettings  # one definition of every knob and its default
    assert (cfg.stalled_after, cfg.failures_critical, cfg.low_win_rate) == (60, 5, 0.35)


events = st.lists(
    st.tuples(
        st.sampled_from(["start", "ok", "fail", "data", "win", "ext"]),
        st.sampled_from(["square8_2p", KEY]),
        st.floats(0, 1),
        st.integers(0, 40 * 3600),
    ),
    max_size=25,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(evs=events, later=st.integers(0, 48 * 3600))
def test_status_is_max_severity(tmp_path_factory: pytest.TempPathFactory, evs: list, later: int) -> None:
    with TrainingHealthMonitor(tmp_path_factory.mktemp("h") / "d.db") as m:
        for kind, key, x, dt in sorted(evs, key=lambda e: e[3]):
            now = T0 + timedelta(seconds=dt)
            if kind == "start":
                m.record_training_start(key, now=now)
            elif kind in ("ok", "fail"):
                m.record_training_complete(key, success=kind == "ok", now=now)
            elif kind == "data":
                m.record_data_update(key, game_count=int(x * 100), now=now)
            elif kind == "win":
                m.record_win_rate(key, win_rate=x, now=now)
            else:
                m.set_condition(
                    key,
                    "lock_unavailable",
                    active=x > 0.3,
                    severity="critical" if x > 0.6 else "warning",
                    message=f"{x}",
                    now=now,
                )
        at = T0 + timedelta(seconds=later + 40 * 3600)
        m.evaluate(now=at)
        r = m.get_health_status(now=at)
        sev = {a.severity for a in r.active_alerts}
        expected = "unhealthy" if "critical" in sev else "degraded" if "warning" in sev else "healthy"
        assert r.status == expected
        assert {(a.config, a.kind, a.severity) for a in r.active_alerts} == {
            (c or None, k, s) for (c, k, _), (s, _m) in m._desired(at.timestamp()).items()
        }
