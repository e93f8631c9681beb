"""deploy/grafana/ringrift-training.json: valid, portable, and on the metrics contract."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASH = ROOT / "deploy" / "grafana" / "ringrift-training.json"
CONTRACT = ROOT / "deploy" / "prometheus" / "metrics_contract.txt"
METRIC = re.compile(r"\b(ringrift_[a-z0-9_]+)")
HIST_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def contract() -> set[str]:
    return {
        line.split()[0]
        for line in CONTRACT.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }


def dashboard() -> dict[str, Any]:
    data = json.loads(DASH.read_text())
    assert isinstance(data, dict)
    return data


def queries(d: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def test_identity_and_datasource_variable() -> None:
    d = dashboard()
    assert d["uid"] == "ringrift-training"
    assert d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance", "config"} <= set(variables)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        # Never a hard-coded datasource uid: portable across Grafana instances.
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"


def test_expected_panels() -> None:
    titles = {p["title"] for p in dashboard()["panels"]}
    for title in (
        "Signal scores",
        "Priority",
        "Should train",
        "Curriculum weight",
        "Runs per hour by outcome",
        "Run duration p50 / p90",
        "Train / val loss",
        "Active alerts",
        "Lock backend",
        "Lease losses (15 m)",
        "Export cache hit ratio (1 h)",
    ):
        assert title in titles, title
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert rows[:2] == ["Overview", "Decisions (per config)"]


def test_queries_use_only_contract_metrics_and_cover_them() -> None:
    known = contract()
    used: set[str] = set()
    for expr in queries(dashboard()):
        for name in METRIC.findall(expr):
            base = HIST_SUFFIX.sub("", name)
            used.add(base if base in known else name)
    assert used - known == set(), used - known
    assert known - used == set(), f"contract metrics not on the dashboard: {known - used}"


def test_per_config_panels_filter_by_config_variable() -> None:
    for expr in queries(dashboard()):
        if 'config=~"$config"' in expr:
            continue
        # Node-level families carry no config label.
        names = set(METRIC.findall(expr))
        per_config = {
            n
            for n in names
            if not n.startswith(("ringrift_lock_backend", "ringrift_redis_up", "ringrift_poll_"))
            and n
            not in (
                "ringrift_training_alerts_critical",
                "ringrift_training_alerts_warning",
                "ringrift_source_healthy",
                "ringrift_daemon_last_tick_timestamp_seconds",
                "ringrift_daemon_build_info",
            )
        }
        assert not per_config, expr


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for y in range(g["y"], g["y"] + g["h"]):
            for x in range(g["x"], g["x"] + g["w"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))
