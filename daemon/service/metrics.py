"""Prometheus metrics, always through an injected ``CollectorRegistry``.

Events (runs, exports, lease losses, poll durations) are counters and
histograms updated where they happen. State (signals, decisions, alerts, lock
backend) is produced at scrape time by :class:`StateCollector` from the
in-memory :class:`~daemon.service.view.ServiceView`, so labels that disappear are not
exported forever and a scrape never blocks on a database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.decide.exposition import HealthRow, health_metric_families
from daemon.decide.triggers import SIGNALS
from daemon.service.view import ServiceView

RUN_OUTCOMES = ("succeeded", "failed", "interrupted")
EXPORT_RESULTS = ("hit", "miss", "error")
ALERT_KINDS = (
    "stalled_training",
    "consecutive_failures",
    "stale_model",
    "stale_data",
    "low_win_rate",
    "source_unhealthy",
    "lock_unavailable",
    "registry_unavailable",
    "model_corrupt",
)


class Metrics:
    """Event metrics of the service, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, config_keys: list[str]) -> None:
        self.registry = registry
        self.runs = Counter(
            "ringrift_training_runs", "Pipeline runs by outcome.", ["config", "outcome"], registry=registry
        )
        self.run_duration = Histogram(
            "ringrift_training_run_duration_seconds",
            "Wall time of a pipeline run (lock to release).",
            ["config"],
            registry=registry,
            buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, float("inf")),
        )
        self.exports = Counter(
            "ringrift_export",
            "Export attempts by result (cache hit, miss, error).",
            ["config", "result"],
            registry=registry,
        )
        self.export_duration = Histogram(
            "ringrift_export_duration_seconds",
            "Wall time of an export (cache check included).",
            ["config"],
            registry=registry,
            buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, float("inf")),
        )
        self.lease_lost = Counter(
            "ringrift_lock_lease_lost", "Leases lost while a run held them.", ["config"], registry=registry
        )
        self.poll_duration = Histogram(
            "ringrift_poll_duration_seconds",
            "Wall time of one poll of every game database.",
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, float("inf")),
        )
        self.tick_duration = Histogram(
            "ringrift_tick_duration_seconds",
            "Wall time of one decide-and-dispatch tick.",
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, float("inf")),
        )
        self.scheduler_events = Counter(
            "ringrift_scheduler_events",
            "APScheduler job errors, misses and skipped overlaps.",
            ["event"],
            registry=registry,
        )
        self.promotion_llr = Gauge(
            "ringrift_promotion_llr",
            "Log-likelihood ratio of the config's open promotion test (accept at the upper bound).",
            ["config"],
            registry=registry,
        )
        self.promotion_games = Gauge(
            "ringrift_promotion_games",
            "Evaluation games counted by the config's open promotion test.",
            ["config"],
            registry=registry,
        )
        self.promotion_max_games = Gauge(
            "ringrift_promotion_max_games",
            "The game cap of the config's open promotion test (its fallback decides there).",
            ["config"],
            registry=registry,
        )
        self.promotion_decisions = Counter(
            "ringrift_promotion_decisions",
            "Promotion tests decided, by result (accepted, rejected).",
            ["config", "result"],
            registry=registry,
        )
        # Known label sets export 0 instead of being absent.
        for key in config_keys:
            for outcome in RUN_OUTCOMES:
                self.runs.labels(key, outcome)
            for result in EXPORT_RESULTS:
                self.exports.labels(key, result)
            self.lease_lost.labels(key)
            for result in ("accepted", "rejected"):
                self.promotion_decisions.labels(key, result)
        for event in ("error", "missed", "max_instances"):
            self.scheduler_events.labels(event)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class StateCollector(Collector):
    """Scrape-time gauges computed from the latest :class:`ServiceView`."""

    def __init__(self, view: Callable[[], ServiceView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        v = self._view()
        rows = [
            HealthRow(key, c.is_running, c.consecutive_failures, c.model_count, c.win_rate)
            for key, c in v.configs.items()
        ]
        labels = [
            (str(a.get("config") or ""), str(a.get("kind")), str(a.get("severity")).lower()) for a in v.alerts
        ]
        yield from health_metric_families(rows, labels)
        per: dict[str, GaugeMetricFamily] = {
            "priority": _gauge(
                "ringrift_training_priority", "Decision priority (weighted signals x curriculum).", ["config"]
            ),
            "weight": _gauge(
                "ringrift_training_curriculum_weight", "Curriculum weight (0.5-2.0).", ["config"]
            ),
            "should": _gauge(
                "ringrift_training_should_train", "1 when the decision is to train.", ["config"]
            ),
            "usable": _gauge("ringrift_training_usable_games", "Usable games in all sources.", ["config"]),
            "new": _gauge(
                "ringrift_training_new_games", "Usable games since the last successful run.", ["config"]
            ),
            "last_ok": _gauge(
                "ringrift_training_last_success_timestamp_seconds",
                "Unix time of the last successful run.",
                ["config"],
            ),
            "epoch": _gauge(
                "ringrift_trainer_epoch", "Last epoch reported by the running trainer.", ["config"]
            ),
            "tloss": _gauge("ringrift_trainer_train_loss", "Last training loss reported.", ["config"]),
            "vloss": _gauge("ringrift_trainer_val_loss", "Last validation loss reported.", ["config"]),
            "sps": _gauge("ringrift_trainer_samples_per_second", "Trainer throughput.", ["config"]),
        }
        signals = _gauge(
            "ringrift_training_signal_score", "Training signal scores (0-1).", ["config", "signal"]
        )
        for key, c in v.configs.items():
            per["priority"].add_metric([key], c.priority)
            per["weight"].add_metric([key], c.curriculum_weight)
            per["should"].add_metric([key], 1.0 if c.should_train else 0.0)
            per["usable"].add_metric([key], c.usable_games)
            per["new"].add_metric([key], c.new_games)
            if c.last_success_ts is not None:
                per["last_ok"].add_metric([key], c.last_success_ts)
            for name, fam in (
                ("epoch", "epoch"),
                ("train_loss", "tloss"),
                ("val_loss", "vloss"),
                ("samples_per_second", "sps"),
            ):
                if name in c.trainer:
                    per[fam].add_metric([key], float(c.trainer[name]))
            for s in SIGNALS:
                signals.add_metric([key, s], float(c.signal_scores.get(s, 0.0)))
        yield from per.values()
        yield signals
        backend = _gauge("ringrift_lock_backend", "1 for the lock backend in use.", ["backend"])
        for b in ("redis", "file"):
            backend.add_metric([b], 1.0 if v.lock_backend == b else 0.0)
        yield backend
        if v.redis_up is not None:
            up = _gauge("ringrift_redis_up", "1 when Redis answered the last check.")
            up.add_metric([], 1.0 if v.redis_up else 0.0)
            yield up
        src = _gauge(
            "ringrift_source_healthy", "1 when the game database was readable at the last poll.", ["source"]
        )
        for path, source in v.sources.items():
            src.add_metric([path], 1.0 if source.get("ok") else 0.0)
        yield src
        if v.last_tick_ts is not None:
            tick = _gauge(
                "ringrift_daemon_last_tick_timestamp_seconds", "Unix time of the last finished tick."
            )
            tick.add_metric([], v.last_tick_ts)
            yield tick
        info = _gauge("ringrift_daemon_build_info", "Build information.", ["version"])
        info.add_metric([v.version], 1.0)
        yield info


def build_registry(
    config_keys: list[str], view: Callable[[], ServiceView]
) -> tuple[CollectorRegistry, Metrics]:
    """A fresh registry with the event metrics and the scrape-time collector."""
    registry = CollectorRegistry(auto_describe=False)
    metrics = Metrics(registry, config_keys)
    registry.register(StateCollector(view))
    return registry, metrics
