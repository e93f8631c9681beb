"""What the service knows right now: one in-memory view, read by ``/status``,
``/metrics`` (at scrape time) and ``ringrift-daemon status``.

The loop replaces the view after each tick; readers never touch a database, so
a scrape never blocks the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daemon.data.snapshot import SkipCounts
from daemon.decide.triggers import SIGNALS


@dataclass
class ConfigView:
    key: str
    usable_games: int = 0
    new_games: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: SkipCounts().as_dict())
    signal_scores: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SIGNALS, 0.0))
    curriculum_weight: float = 1.0
    priority: float = 0.0
    should_train: bool = False
    reason: str = "not evaluated yet"
    lock: dict[str, Any] | None = None
    run: dict[str, Any] | None = None
    latest_model: str | None = None
    production_model: str | None = None
    # The open promotion test (challenger vs production, LLR, bounds, Elo), None without one.
    promotion: dict[str, Any] | None = None
    model_count: int = 0
    win_rate: float | None = None
    consecutive_failures: int = 0
    is_running: bool = False
    last_success_ts: float | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    trainer: dict[str, float] = field(default_factory=dict)

    def as_status(self) -> dict[str, Any]:
        return {
            "usable_games": self.usable_games,
            "new_games": self.new_games,
            "skipped": dict(self.skipped),
            "signal_scores": dict(self.signal_scores),
            "curriculum_weight": self.curriculum_weight,
            "priority": self.priority,
            "should_train": self.should_train,
            "reason": self.reason,
            "lock": self.lock,
            "run": self.run,
            "latest_model": self.latest_model,
            "production_model": self.production_model,
            "promotion": self.promotion,
            "model_count": self.model_count,
            "win_rate": self.win_rate,
            "consecutive_failures": self.consecutive_failures,
            "alerts": list(self.alerts),
        }


@dataclass
class ServiceView:
    configs: dict[str, ConfigView]
    health: str = "healthy"
    health_summary: str = ""
    lock_backend: str = "file"
    lock_backend_reason: str = ""
    redis_up: bool | None = None
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    last_tick_ts: float | None = None
    service_running: bool = False
    version: str = ""

    @classmethod
    def empty(cls, keys: list[str], version: str = "") -> ServiceView:
        return cls(configs={k: ConfigView(k) for k in keys}, version=version)

    def as_status(self) -> dict[str, Any]:
        return {
            "configs": {k: c.as_status() for k, c in self.configs.items()},
            "health": self.health,
            "health_summary": self.health_summary,
            "lock_backend": self.lock_backend,
            "lock_backend_reason": self.lock_backend_reason,
            "sources": self.sources,
            "alerts": self.alerts,
            "service_running": self.service_running,
            "last_tick": self.last_tick_ts,
            "version": self.version,
        }
