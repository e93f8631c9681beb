"""deploy/logging: the README's jq recipes against the daemon's real JSON log lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.support.system_deps import require

ROOT = Path(__file__).resolve().parents[2]
LOGGING = ROOT / "deploy" / "logging"
EVENTS = {
    *["run.started", "run.succeeded", "run.failed", "run.interrupted"],
    *["export.started", "export.finished", "export.cache_hit", "export.failed"],
    *["trainer.started", "trainer.progress", "trainer.epoch", "trainer.exited", "trainer.teardown_crash"],
    *["promotion.accepted", "promotion.rejected", "registry.unavailable"],
    *["lock.acquired", "lock.released", "lock.lost", "lock.backend_selected", "lock.backend_fallback"],
    *["alert.raised", "alert.resolved", "source.unhealthy", "source.recovered"],
    *["registry.registered", "registry.rejected", "registry.promoted"],
    *["service.started", "service.stopping", "service.stopped", "tick.finished"],
}
OWN_EVENTS = {"notify.send_failed", "notify.unsupported_socket"}

# Emits lines exactly as the service does under systemd (daemon.logs, JSON to a non-tty).
EMITTER = textwrap.dedent(
    """
    import sys, structlog
    from daemon.logs import configure_logging
    configure_logging("INFO", json=True, stream=sys.stdout)
    log = structlog.get_logger("daemon.pipeline")
    log.info("run.started", config="square8_2p", run_id="r1")
    log.error("run.failed", config="square8_2p", code="DIVERGED")
    log.warning("lock.lost", config="hex8_3p")
    log.warning("alert.raised", config="hex8_3p", kind="stale_data", severity="warning")
    log.error("alert.raised", config="hex8_3p", kind="stalled_training", severity="critical")
    log.info("tick.finished", seconds=0.01)
    sys.stdout.flush()
    print("Traceback (most recent call last): not json", flush=True)
    """
)


@pytest.fixture(scope="module")
def log_lines() -> str:
    res = subprocess.run(
        [sys.executable, "-c", EMITTER],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    return res.stdout


def readme_jq_filters() -> list[str]:
    text = (LOGGING / "README.md").read_text()
    return re.findall(r"jq -c?R[^']*'([^']+)'", text)


def run_jq(filt: str, stdin: str, *flags: str) -> list[str]:
    jq = require("jq")
    res = subprocess.run(
        [jq, *flags, filt], input=stdin, capture_output=True, text=True, timeout=30, check=True
    )
    return [line for line in res.stdout.splitlines() if line]


def test_lines_are_json_with_event_names(log_lines: str) -> None:
    records = [json.loads(line) for line in log_lines.splitlines() if line.startswith("{")]
    assert [r["event"] for r in records][:3] == ["run.started", "run.failed", "lock.lost"]
    assert all({"event", "level", "timestamp", "logger"} <= set(r) for r in records)


def test_follow_filter_selects_failures_lost_leases_and_critical_alerts(log_lines: str) -> None:
    follow, count, pager = readme_jq_filters()
    got = [json.loads(x) for x in run_jq(follow, log_lines, "-cR")]
    assert [(r["event"], r.get("severity")) for r in got] == [
        ("run.failed", None),
        ("lock.lost", None),
        ("alert.raised", "critical"),
    ]
    assert run_jq(count, log_lines, "-R") == ['"square8_2p"']
    assert [json.loads(x)["event"] for x in run_jq(pager, log_lines, "-cR")] == ["run.failed", "lock.lost"]


def test_loki_rules_and_readme_use_contract_events() -> None:
    rules = yaml.safe_load((LOGGING / "loki-rules.yml").read_text())
    used = set()
    for rule in rules["groups"][0]["rules"]:
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["runbook_url"]
        used.update(re.findall(r'event="([a-z_.]+)"', rule["expr"]))
    assert used and used <= EVENTS
    readme = (LOGGING / "README.md").read_text()
    documented = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", readme))
    assert documented >= EVENTS, EVENTS - documented
    assert {e for e in documented - EVENTS if not e.endswith((".yml", ".py"))} <= OWN_EVENTS
    for filt in readme_jq_filters():
        assert set(re.findall(r'"([a-z_]+\.[a-z_]+)"', filt)) <= EVENTS
    yaml.safe_load((LOGGING / "promtail.yml").read_text())
