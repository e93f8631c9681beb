"""Prometheus families of the health monitor (seed metric names, ``config`` label)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


def health_metric_families(snap: dict[str, Any]) -> list[Metric]:
    """Families of a :meth:`TrainingHealthMonitor.snapshot` (seed metric names)."""
    fam = {
        "is_running": GaugeMetricFamily(
            "ringrift_training_is_running",
            "1 while a run of the config is in progress.",
            labels=["config"],
        ),
        "consecutive_failures": GaugeMetricFamily(
            "ringrift_training_consecutive_failures",
            "Failed runs since the last success.",
            labels=["config"],
        ),
        "model_count": GaugeMetricFamily(
            "ringrift_training_model_count", "Models trained for the config.", labels=["config"]
        ),
        "win_rate": GaugeMetricFamily(
            "ringrift_training_win_rate",
            "Recent win rate of the config's model (0-1).",
            labels=["config"],
        ),
    }
    for key, c in snap["configs"].items():
        fam["is_running"].add_metric([key], 1.0 if c["is_running"] else 0.0)
        fam["consecutive_failures"].add_metric([key], float(c["consecutive_failures"]))
        if c["model_count"] is not None:
            fam["model_count"].add_metric([key], float(c["model_count"]))
        if c["win_rate"] is not None:
            fam["win_rate"].add_metric([key], float(c["win_rate"]))
    alert = GaugeMetricFamily(
        "ringrift_training_alert", "1 while an alert is active.", labels=["config", "kind", "severity"]
    )
    for a in snap["alerts"]:
        alert.add_metric([a["config"] or "", a["kind"], a["severity"]], 1.0)
    crit = GaugeMetricFamily(
        "ringrift_training_alerts_critical",
        "Active critical alerts.",
        value=sum(1 for a in snap["alerts"] if a["severity"] == "critical"),
    )
    warn = GaugeMetricFamily(
        "ringrift_training_alerts_warning",
        "Active warning alerts.",
        value=sum(1 for a in snap["alerts"] if a["severity"] == "warning"),
    )
    return [*fam.values(), alert, crit, warn]


class HealthCollector(Collector):
    """Scrape-time families for a registry the caller injects.

    Use ``HealthCollector(monitor.snapshot, clock)``; the clock gives ``now``.
    """

    def __init__(self, snapshot: Callable[[datetime], dict[str, Any]], clock: Callable[[], datetime]) -> None:
        self._snapshot = snapshot
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        yield from health_metric_families(self._snapshot(self._clock()))
