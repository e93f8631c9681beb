"""Value types of the health monitor (alerts, report, per-config facts, thresholds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from daemon.settings import HealthSettings

Severity = Literal["warning", "critical"]
SEVERITY_RANK: Final = {"warning": 1, "critical": 2}
Status = Literal["healthy", "degraded", "unhealthy"]
STATUS_BY_RANK: Final[dict[int, Status]] = {0: "healthy", 1: "degraded", 2: "unhealthy"}
INTERNAL_KINDS: Final = (
    "stalled_training",
    "consecutive_failures",
    "stale_model",
    "stale_data",
    "low_win_rate",
)

AlertKey = tuple[str, str, str]  # (config or "", kind, subject or "")


# The thresholds are the ``health:`` settings section itself: one name and one default per knob.
HealthConfig = HealthSettings


@dataclass(frozen=True)
class Alert:
    severity: Severity
    kind: str
    config: str | None
    message: str
    since: datetime
    subject: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "kind": self.kind,
            "config": self.config,
            "message": self.message,
            "since": self.since.isoformat(),
            "subject": self.subject,
        }


@dataclass(frozen=True)
class AlertChange:
    action: Literal["raised", "resolved"]
    alert: Alert


@dataclass(frozen=True)
class HealthReport:
    status: Status
    summary: str
    active_alerts: list[Alert] = field(default_factory=list)


@dataclass(frozen=True)
class ConfigHealth:
    """Recorded facts of one config (unix seconds)."""

    running: bool = False
    run_id: str | None = None
    started_at: float | None = None
    consecutive_failures: int = 0
    last_success: float | None = None
    last_failure: float | None = None
    last_message: str | None = None
    last_data: float | None = None
    game_count: int | None = None
    win_rate: float | None = None
    model_count: int | None = None
    first_seen: float | None = None
