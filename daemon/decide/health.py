"""Training health: recorded run/data/win-rate facts -> alerts, a status and metrics.

Alerts (thresholds are :class:`HealthConfig` fields)::

    stalled_training      CRITICAL  a run started > 4 h ago has not completed
    consecutive_failures  WARNING at 1-2 failed runs in a row, CRITICAL at 3+ (a success clears it)
    stale_model           WARNING   no successful training for > 24 h
    stale_data            WARNING   no new data for > 12 h
    low_win_rate          WARNING   last recorded win rate < 0.35

"Since" for stale_model/stale_data is the last success/data update, or, when
there never was one, the first time the monitor heard of the config. External
conditions (``source_unhealthy``, ``lock_unavailable``, ...) are raised and
resolved by :meth:`TrainingHealthMonitor.set_condition` through the same table.

:meth:`get_health_status` is a pure function of the recorded state and ``now``;
:meth:`evaluate` (also run after each ``record_*``) persists what changed and
logs ``alert.raised`` / ``alert.resolved``. Alerts, in-flight runs and last
times are in the state store, so a restarted monitor sees the same picture.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from daemon.decide.clock import resolve_now, to_dt
from daemon.decide.exposition import HealthCollector, snapshot_families
from daemon.decide.health_types import (
    INTERNAL_KINDS,
    SEVERITY_RANK,
    STATUS_BY_RANK,
    Alert,
    AlertChange,
    AlertKey,
    ConfigHealth,
    HealthConfig,
    HealthReport,
    Severity,
)
from daemon.decide.store import DecideStore
from daemon.keys import ALL_CONFIG_KEYS, validate_config_key

if TYPE_CHECKING:
    from daemon.settings import HealthSettings

log = structlog.get_logger(__name__)

__all__ = [
    "Alert",
    "AlertChange",
    "ConfigHealth",
    "HealthCollector",
    "HealthConfig",
    "HealthReport",
    "Severity",
    "TrainingHealthMonitor",
    "get_training_health_monitor",
]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600.0:.1f} h"


class TrainingHealthMonitor:
    """Constructor stores; :meth:`open` loads state from the store, :meth:`close` releases it."""

    def __init__(
        self,
        store_or_path: DecideStore | Path | str,
        config: HealthConfig | None = None,
        *,
        configs: Sequence[str] = ALL_CONFIG_KEYS,
        read_only: bool = False,
    ) -> None:
        self.config = config or HealthConfig()
        # The configs always listed (weights, metrics), also before anything was recorded.
        self.configs = tuple(validate_config_key(k) for k in configs)
        self.store, self._owns_store = DecideStore.given(store_or_path, read_only=read_only)
        self._configs: dict[str, ConfigHealth] = {}
        self._alerts: dict[AlertKey, tuple[Alert, bool]] = {}  # -> (alert, external)

    @classmethod
    def from_settings(
        cls,
        path: Path | str,
        settings: HealthSettings,
        *,
        configs: Sequence[str] = ALL_CONFIG_KEYS,
        read_only: bool = False,
    ) -> TrainingHealthMonitor:
        return cls(path, settings, configs=configs, read_only=read_only)

    def open(self) -> TrainingHealthMonitor:
        if self._owns_store:
            self.store.open()
        names = {f.name for f in fields(ConfigHealth)}
        self._configs = {
            k: ConfigHealth(**{n: v for n, v in json.loads(s).items() if n in names})
            for k, s in self.store.states("health_configs").items()
        }
        self._alerts = {}
        for cfg, kind, subject, sev, msg, since, external in self.store.alerts():
            severity: Severity = "critical" if sev == "critical" else "warning"
            alert = Alert(severity, kind, cfg or None, msg, _dt(since), subject or None)
            self._alerts[(cfg, kind, subject)] = (alert, external)
        return self

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> TrainingHealthMonitor:
        return self.open()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- recording ------------------------------------------------------------
    def _update(self, key: str, t: float, **changes: Any) -> None:
        key = validate_config_key(key)
        old = self._configs.get(key, ConfigHealth())
        new = replace(old, first_seen=old.first_seen if old.first_seen is not None else t, **changes)
        if new != old:
            self.store.put_state("health_configs", key, json.dumps(asdict(new), sort_keys=True))
            self._configs[key] = new

    def record_training_start(self, key: str, now: datetime | None = None, run_id: str | None = None) -> None:
        now = resolve_now(now)
        self._update(key, now.timestamp(), running=True, run_id=run_id, started_at=now.timestamp())
        self.evaluate(now)

    def record_training_complete(
        self,
        key: str,
        success: bool,
        now: datetime | None = None,
        message: str | None = None,
        model_count: int | None = None,
    ) -> None:
        now = resolve_now(now)
        t = now.timestamp()
        old = self._configs.get(validate_config_key(key), ConfigHealth())
        changes: dict[str, Any] = {
            "running": False,
            "run_id": None,
            "started_at": None,
            "last_message": message,
        }
        if success:
            changes.update(consecutive_failures=0, last_success=t)
        else:
            changes.update(consecutive_failures=old.consecutive_failures + 1, last_failure=t)
        if model_count is not None:
            changes["model_count"] = model_count
        elif success:  # a completed training made one more model (the registry's count overrides)
            changes["model_count"] = (old.model_count or 0) + 1
        self._update(key, t, **changes)
        self.evaluate(now)

    def record_training_stopped(self, key: str, now: datetime | None = None) -> None:
        """The run was stopped by the service stopping: no longer running, and not a failure
        (an operator stop must not leave a consecutive_failures alert that fires on every restart)."""
        now = resolve_now(now)
        self._update(key, now.timestamp(), running=False, run_id=None, started_at=None)
        self.evaluate(now)

    def record_data_update(self, key: str, game_count: int, now: datetime | None = None) -> None:
        now = resolve_now(now)
        self._update(key, now.timestamp(), last_data=now.timestamp(), game_count=int(game_count))
        self.evaluate(now)

    def record_win_rate(self, key: str, win_rate: float | None, now: datetime | None = None) -> None:
        if win_rate is not None and not 0.0 <= win_rate <= 1.0:
            raise ValueError(f"{key}: win_rate must be within [0, 1] or None, got {win_rate!r}")
        now = resolve_now(now)
        self._update(key, now.timestamp(), win_rate=win_rate)
        self.evaluate(now)

    def set_model_count(self, key: str, model_count: int, now: datetime | None = None) -> None:
        self._update(key, resolve_now(now).timestamp(), model_count=int(model_count))

    def record_fleet_success(self, key: str, finished_at: datetime, now: datetime | None = None) -> None:
        """A success of ``key`` anywhere in the fleet (DESIGN 11): failures recorded here before it
        are cleared, as a local success would; failures after it still count."""
        now = resolve_now(now)
        t = finished_at.timestamp()
        old = self._configs.get(validate_config_key(key))
        if old is None or old.consecutive_failures == 0 or (old.last_failure or 0.0) > t:
            return
        self._update(key, now.timestamp(), consecutive_failures=0, last_success=max(t, old.last_success or t))
        self.evaluate(now)

    def set_condition(
        self,
        key: str | None,
        kind: str,
        active: bool,
        severity: Severity = "warning",
        message: str = "",
        now: datetime | None = None,
        subject: str | None = None,
    ) -> AlertChange | None:
        """Raise or resolve an externally detected condition (e.g. ``source_unhealthy``)."""
        if kind in INTERNAL_KINDS:
            raise ValueError(f"{kind} is computed by the monitor; it cannot be set externally")
        if severity not in SEVERITY_RANK:
            raise ValueError(f"severity must be 'warning' or 'critical', got {severity!r}")
        cfg = validate_config_key(key) if key is not None else ""
        akey: AlertKey = (cfg, kind, subject or "")
        now = resolve_now(now)
        cur = self._alerts.get(akey)
        if active:
            if cur is not None and cur[0].severity == severity and cur[0].message == message:
                return None
            since = cur[0].since if cur is not None else now
            alert = Alert(severity, kind, cfg or None, message, since, subject)
            self._put(akey, alert, external=True)
            if cur is not None and cur[0].severity == severity:
                return None  # same alert, new wording: no new event
            return self._emit("raised", alert)
        if cur is None:
            return None
        self._drop(akey)
        return self._emit("resolved", replace(cur[0], message=message or cur[0].message))

    def condition_subjects(self, kind: str) -> list[str]:
        """Subjects of the active externally set alerts of ``kind`` (e.g. unhealthy source paths)."""
        return sorted(s for (_, k, s), (_, ext) in self._alerts.items() if k == kind and ext and s)

    # -- evaluation -----------------------------------------------------------
    def _desired(self, t: float) -> dict[AlertKey, tuple[Severity, str]]:
        c = self.config
        out: dict[AlertKey, tuple[Severity, str]] = {}
        for key, h in self._configs.items():
            if h.running and h.started_at is not None and t - h.started_at > c.stalled_after:
                out[(key, "stalled_training", "")] = (
                    "critical",
                    f"training running {_hours(t - h.started_at)} > {_hours(c.stalled_after)}"
                    + (f" (run {h.run_id})" if h.run_id else ""),
                )
            if h.consecutive_failures > 0:
                sev: Severity = "critical" if h.consecutive_failures >= c.failures_critical else "warning"
                last = f": {h.last_message}" if h.last_message else ""
                out[(key, "consecutive_failures", "")] = (
                    sev,
                    f"{h.consecutive_failures} consecutive failed run(s){last}",
                )
            ref = h.last_success if h.last_success is not None else h.first_seen
            if ref is not None and t - ref > c.stale_model_after:
                what = (
                    "no successful training for" if h.last_success is not None else "no training since seen,"
                )
                out[(key, "stale_model", "")] = (
                    "warning",
                    f"{what} {_hours(t - ref)} > {_hours(c.stale_model_after)}",
                )
            ref = h.last_data if h.last_data is not None else h.first_seen
            if ref is not None and t - ref > c.stale_data_after:
                out[(key, "stale_data", "")] = (
                    "warning",
                    f"no new data for {_hours(t - ref)} > {_hours(c.stale_data_after)}",
                )
            if h.win_rate is not None and h.win_rate < c.low_win_rate:
                out[(key, "low_win_rate", "")] = (
                    "warning",
                    f"win rate {h.win_rate:.2f} < {c.low_win_rate:.2f}",
                )
        for akey, (alert, external) in self._alerts.items():
            if external:
                out[akey] = (alert.severity, alert.message)
        return out

    def _active(self, now: datetime) -> list[Alert]:
        out = []
        for akey, (sev, msg) in self._desired(now.timestamp()).items():
            cur = self._alerts.get(akey)
            since = cur[0].since if cur is not None else now
            cfg, kind, subject = akey
            out.append(Alert(sev, kind, cfg or None, msg, since, subject or None))
        out.sort(key=lambda a: (-SEVERITY_RANK[a.severity], a.config or "", a.kind, a.subject or ""))
        return out

    def evaluate(self, now: datetime | None = None) -> list[AlertChange]:
        """Raise new alerts, re-raise changed severities, resolve cleared ones; return the changes."""
        now = resolve_now(now)
        desired = {(a.config or "", a.kind, a.subject or ""): a for a in self._active(now)}
        changes: list[AlertChange] = []
        for akey, (cur, external) in list(self._alerts.items()):
            if not external and akey not in desired:
                self._drop(akey)
                changes.append(self._emit("resolved", replace(cur, message=f"cleared: {cur.message}")))
        for akey, alert in desired.items():
            prev = self._alerts.get(akey)
            if prev is None or prev[0].severity != alert.severity:
                self._put(akey, alert, external=False)
                changes.append(self._emit("raised", alert, previous=prev[0].severity if prev else None))
        return changes

    def _put(self, akey: AlertKey, alert: Alert, external: bool) -> None:
        self.store.upsert_alert(
            akey[0], akey[1], akey[2], alert.severity, alert.message, alert.since.timestamp(), external
        )
        self._alerts[akey] = (alert, external)

    def _drop(self, akey: AlertKey) -> None:
        self.store.delete_alert(*akey)
        self._alerts.pop(akey, None)

    def _emit(
        self, action: Literal["raised", "resolved"], alert: Alert, previous: str | None = None
    ) -> AlertChange:
        kw: dict[str, Any] = {
            "severity": alert.severity,
            "config": alert.config,
            "kind": alert.kind,
            "message": alert.message,
        }
        if alert.subject:
            kw["subject"] = alert.subject
        if previous:
            kw["previous_severity"] = previous
        if action == "raised":
            (log.error if alert.severity == "critical" else log.warning)("alert.raised", **kw)
        else:
            log.info("alert.resolved", **kw)
        return AlertChange(action, alert)

    # -- reading (pure) -------------------------------------------------------
    def get_health_status(self, now: datetime | None = None) -> HealthReport:
        alerts = self._active(resolve_now(now))
        rank = max((SEVERITY_RANK[a.severity] for a in alerts), default=0)
        status = STATUS_BY_RANK[rank]
        if not alerts:
            tracked = set(self.configs) | set(self._configs)  # enabled ones, and any with history
            summary = f"no active alerts ({len(tracked)} configs tracked)"
        else:
            crit = sum(1 for a in alerts if a.severity == "critical")
            first = alerts[0]
            summary = (
                f"{len(alerts)} active alert(s): {crit} critical, {len(alerts) - crit} warning; "
                f"worst: {first.config or first.subject or '-'} {first.kind}: {first.message}"
            )
        return HealthReport(status, summary, alerts)

    def snapshot(self, now: datetime | None = None) -> dict[str, Any]:
        """Plain data for a custom collector or ``/status``: per-config facts and active alerts."""
        now = resolve_now(now)
        report = self.get_health_status(now)
        keys = list(dict.fromkeys([*self.configs, *sorted(self._configs)]))
        configs: dict[str, Any] = {}
        for k in keys:
            h = self._configs.get(k, ConfigHealth())
            configs[k] = {
                "is_running": h.running,
                "run_id": h.run_id,
                "started_at": _iso(h.started_at),
                "consecutive_failures": h.consecutive_failures,
                "model_count": h.model_count,
                "win_rate": h.win_rate,
                "game_count": h.game_count,
                "last_success": _iso(h.last_success),
                "last_failure": _iso(h.last_failure),
                "last_data": _iso(h.last_data),
            }
        return {
            "status": report.status,
            "summary": report.summary,
            "configs": configs,
            "alerts": [a.as_dict() for a in report.active_alerts],
        }

    def get_prometheus_metrics(self, now: datetime | None = None) -> str:
        """Exposition text (HELP and TYPE on every family) from a private registry."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(HealthCollector(self.snapshot, clock=lambda: resolve_now(now)))
        return generate_latest(registry).decode()

    def metric_families(self, now: datetime | None = None) -> list[Metric]:
        return snapshot_families(self.snapshot(now))


def _dt(seconds: float) -> datetime:
    d = to_dt(seconds)
    assert d is not None
    return d


def _iso(seconds: float | None) -> str | None:
    d = to_dt(seconds)
    return d.isoformat() if d is not None else None


def get_training_health_monitor(
    path: Path | str, config: HealthConfig | None = None
) -> TrainingHealthMonitor:
    """Convenience for scripts only (the package builds its own): an opened monitor."""
    return TrainingHealthMonitor(path, config).open()
