"""The health metric families (seed names, one ``config`` label), defined once.

Both the health monitor's own exposition (``get_prometheus_metrics``) and the service's
``/metrics`` build these families here, so names, help texts and labels cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True)
class HealthRow:
    """One config's health numbers as exported."""

    config: str
    is_running: bool
    consecutive_failures: float
    model_count: float | None
    win_rate: float | None


# (config or "", kind, severity) of each active alert
AlertLabels = tuple[str, str, str]


def health_metric_families(rows: Iterable[HealthRow], alerts: Iterable[AlertLabels]) -> list[Metric]:
    running = GaugeMetricFamily(
        "ringrift_training_is_running", "1 while a run of the config is in progress.", labels=["config"]
    )
    failures = GaugeMetricFamily(
        "ringrift_training_consecutive_failures", "Failed runs since the last success.", labels=["config"]
    )
    models = GaugeMetricFamily(
        "ringrift_training_model_count", "Models trained and registered for the config.", labels=["config"]
    )
    win_rate = GaugeMetricFamily(
        "ringrift_training_win_rate", "Recent win rate of the config's model (0-1).", labels=["config"]
    )
    for r in rows:
        running.add_metric([r.config], 1.0 if r.is_running else 0.0)
        failures.add_metric([r.config], float(r.consecutive_failures))
        if r.model_count is not None:
            models.add_metric([r.config], float(r.model_count))
        if r.win_rate is not None:
            win_rate.add_metric([r.config], float(r.win_rate))
    alert = GaugeMetricFamily(
        "ringrift_training_alert", "1 while an alert is active.", labels=["config", "kind", "severity"]
    )
    counts = {"critical": 0, "warning": 0}
    for config, kind, severity in alerts:
        alert.add_metric([config, kind, severity], 1.0)
        counts[severity] = counts.get(severity, 0) + 1
    crit = GaugeMetricFamily(
        "ringrift_training_alerts_critical", "Active critical alerts.", value=counts["critical"]
    )
    warn = GaugeMetricFamily(
        "ringrift_training_alerts_warning", "Active warning alerts.", value=counts["warning"]
    )
    return [running, failures, models, win_rate, alert, crit, warn]


def snapshot_families(snap: dict[str, Any]) -> list[Metric]:
    """The families of a :meth:`TrainingHealthMonitor.snapshot`."""
    rows = [
        HealthRow(key, bool(c["is_running"]), c["consecutive_failures"], c["model_count"], c["win_rate"])
        for key, c in snap["configs"].items()
    ]
    alerts = [(a["config"] or "", a["kind"], a["severity"]) for a in snap["alerts"]]
    return health_metric_families(rows, alerts)


class HealthCollector(Collector):
    """Scrape-time families for a registry the caller injects.

    Use ``HealthCollector(monitor.snapshot, clock)``; the clock gives ``now``.
    """

    def __init__(self, snapshot: Callable[[datetime], dict[str, Any]], clock: Callable[[], datetime]) -> None:
        self._snapshot = snapshot
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        yield from snapshot_families(self._snapshot(self._clock()))
