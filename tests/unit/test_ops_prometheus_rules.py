"""Static checks of deploy/prometheus: structure, names, runbooks, test coverage."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from daemon.service.metrics import ALERT_KINDS

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
KINDS = set(ALERT_KINDS)  # every alert kind the daemon raises has a rule
METRIC = re.compile(r"\b(ringrift_[a-z0-9_]+)")
SUFFIX = re.compile(r"_(bucket|sum|count|created)$")


def contract_metrics() -> dict[str, str]:
    out = {}
    for line in (PROM / "metrics_contract.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, kind, _labels = line.split()
            out[name] = kind
    return out


def referenced_metrics(expr: str) -> set[str]:
    known = contract_metrics()
    names = set()
    for name in METRIC.findall(expr):
        base = SUFFIX.sub("", name)
        if name not in known and base in known and known[base] == "histogram":
            name = base
        names.add(name)
    return names


def load(name: str) -> Any:
    return yaml.safe_load((PROM / name).read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load("alerts.yml")["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_is_complete() -> None:
    anchors = {
        h.strip().lower()
        for h in re.findall(r"^## (.+)$", (ROOT / "deploy" / "RUNBOOK.md").read_text(), flags=re.M)
    }
    names = [r["alert"] for r in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], rule["alert"]
        anchor = ann["runbook_url"].rsplit("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: no '## {anchor}' in deploy/RUNBOOK.md"


def test_every_health_kind_has_a_rule() -> None:
    kinds = set()
    for rule in alert_rules():
        kinds.update(re.findall(r'kind="([a-z_]+)"', rule["expr"]))
    assert kinds == KINDS
    by_name = {r["alert"]: r for r in alert_rules()}
    assert by_name["RingRiftTrainingStalled"]["labels"]["severity"] == "critical"
    assert by_name["RingRiftTrainingFailuresCritical"]["labels"]["severity"] == "critical"
    assert by_name["RingRiftTrainingFailuresWarning"]["labels"]["severity"] == "warning"


def test_symptom_rules() -> None:
    exprs = {r["alert"]: " ".join(r["expr"].split()) for r in alert_rules()}
    assert exprs["RingRiftDaemonDown"] == 'up{job="ringrift-training-daemon"} == 0'
    assert exprs["RingRiftDaemonAbsent"] == 'absent(up{job="ringrift-training-daemon"})'
    assert exprs["RingRiftLeaseLost"] == "increase(ringrift_lock_lease_lost_total[15m]) > 0"
    assert "ringrift_training_last_success_timestamp_seconds" in exprs["RingRiftTrainingNotSucceeding"]
    scrape = load("prometheus.yml")["scrape_configs"]
    job = next(j for j in scrape if j["job_name"] == "ringrift-training-daemon")
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9464"]


def test_rules_reference_only_contract_metrics() -> None:
    known = set(contract_metrics())
    for name in ("alerts.yml", "rules.yml"):
        for group in load(name)["groups"]:
            for rule in group["rules"]:
                unknown = referenced_metrics(rule["expr"]) - known
                assert not unknown, f"{name}: {rule.get('alert') or rule.get('record')}: {unknown}"
                if "record" in rule:
                    assert rule["record"].startswith("ringrift:"), rule["record"]


def test_every_alert_has_firing_and_quiet_tests() -> None:
    tests = load("alerts_test.yml")["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    healthy = next(t for t in tests if t["name"].startswith("healthy"))
    for case in healthy["alert_rule_test"]:
        assert case["exp_alerts"] == []
        quiet.add(case["alertname"])
    for t in tests:
        for case in t["alert_rule_test"]:
            if case["exp_alerts"]:
                firing.add(case["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names == firing, names ^ firing
    assert names == quiet, names ^ quiet
