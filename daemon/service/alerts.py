"""Conditions the service raises as health alerts: unreadable sources and an unusable lock backend.

Source changes are noticed by the poll's worker thread but the health store's connection
belongs to the loop thread, so they are queued here and applied on the loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from datetime import UTC, datetime

from daemon.decide.health import TrainingHealthMonitor
from daemon.service.view import ServiceView


class ServiceAlerts:
    def __init__(self, health: TrainingHealthMonitor, view: ServiceView) -> None:
        self.health = health
        self.view = view
        self.lock_backend = "file"
        self._source_changes: deque[tuple[str, bool, str | None]] = deque()

    # -- sources ------------------------------------------------------------------
    def source_changed(self, path: str, ok: bool, error: str | None) -> None:
        """Called from the poll's worker thread: only queue it (deque appends are thread-safe)."""
        self._source_changes.append((path, ok, error))

    def apply_source_changes(self, now: datetime) -> None:
        """Raise/resolve ``source_unhealthy`` for the changes the last polls saw (loop thread)."""
        while self._source_changes:
            path, ok, error = self._source_changes.popleft()
            self.health.set_condition(
                None,
                "source_unhealthy",
                active=not ok,
                severity="warning",
                message=f"{path}: {error}" if error else f"{path} recovered",
                now=now,
                subject=path,
            )

    def sources_polled(self, paths: Collection[str], now: datetime) -> None:
        """Resolve ``source_unhealthy`` of a path the poll no longer has (removed from
        ``game_dbs`` before a restart): the alert is persisted and would otherwise never clear."""
        for subject in self.health.condition_subjects("source_unhealthy"):
            if subject not in paths:
                self.health.set_condition(
                    None,
                    "source_unhealthy",
                    active=False,
                    message=f"{subject} is no longer a configured source",
                    now=now,
                    subject=subject,
                )

    # -- the lock backend -----------------------------------------------------------
    def lock_availability(self, available: bool, reason: str) -> None:
        """Raise (or resolve) ``lock_unavailable``; call on the loop thread."""
        if self.lock_backend == "redis":
            self.view.redis_up = available
        self.health.set_condition(
            None,
            "lock_unavailable",
            active=not available,
            severity="critical",
            message=reason,
            now=datetime.now(UTC),
        )

    # -- the registry -----------------------------------------------------------------
    def registry_availability(self, available: bool, reason: str, now: datetime) -> None:
        """Raise (or resolve) ``registry_unavailable``: no run can register, so none starts."""
        self.health.set_condition(
            None, "registry_unavailable", active=not available, severity="critical", message=reason, now=now
        )

    def models_corrupt(self, config: str, corrupt: list[str], production: str | None, now: datetime) -> None:
        """Raise (or resolve) ``model_corrupt``: a registered object proved missing or altered.

        Critical when it is the production model (self-play cannot pull it), else a warning; such a
        model is never a warm-start parent. ``registry verify`` re-checks and resolves it."""
        bad_production = production is not None and production in corrupt
        self.health.set_condition(
            config,
            "model_corrupt",
            active=bool(corrupt),
            severity="critical" if bad_production else "warning",
            message=(
                f"{len(corrupt)} corrupt model object(s): {', '.join(corrupt)}"
                + (" (the production model)" if bad_production else "")
                + "; repair the object store and run `ringrift-daemon registry verify`"
                if corrupt
                else "no corrupt model objects"
            ),
            now=now,
        )
