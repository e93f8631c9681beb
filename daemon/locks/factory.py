"""The service's per-config lock factory: the backend chosen once at start, one lock per run.

``auto`` is resolved once (nodes must not flip between backends per run); a Redis that is
down with ``backend: redis`` fails closed, and every refused or restored acquisition is
reported through ``on_availability`` (the service turns it into the ``lock_unavailable``
alert).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import structlog

from daemon.locks.admin import select_backend
from daemon.locks.lock import DistributedLock
from daemon.locks.names import Backend
from daemon.settings import LockSettings, RedisSettings

log = structlog.get_logger(__name__)

Availability = Callable[[bool, str], None]
TRAINING_PURPOSE = "training"


class LockFactory:
    def __init__(
        self,
        redis: RedisSettings | None,
        locks: LockSettings,
        lock_dir: Path,
        *,
        fence_floor: Callable[[str], int] | None = None,
        on_availability: Availability | None = None,
    ) -> None:
        self.redis = redis
        self.locks = locks
        self.lock_dir = lock_dir
        self.fence_floor = fence_floor
        self.on_availability = on_availability
        self.backend: Backend = "file"
        self.reason = ""
        self.available = True

    async def start(self, *, announce: bool = True) -> None:
        """Choose the backend (a Redis PING when one is configured)."""
        r = self.redis
        sel = await asyncio.to_thread(
            select_backend,
            self.locks.backend,
            r.url if r else None,
            password=r.resolved_password() if r else None,
        )
        self.backend, self.reason, self.available = sel.backend, sel.reason, sel.available
        if not self.available:
            # backend "redis" with Redis down: fail closed; runs are refused with this reason.
            self.report(False, self.reason)
        if announce:
            log.info("lock.backend_selected", backend=self.backend, reason=self.reason)

    def report(self, available: bool, reason: str) -> None:
        self.available = available
        if self.on_availability is not None:
            self.on_availability(available, reason)

    def make(self, config: str, on_lost: Callable[..., None]) -> DistributedLock:
        """A fresh lock object for one run of ``config`` (one object per holder)."""
        r = self.redis
        backend: Literal["redis", "file"] = self.backend
        kwargs: dict[str, Any] = {"redis_url": None}
        if r is not None:
            kwargs = {"redis_url": r.url, "key_prefix": r.key_prefix, "password": r.resolved_password()}
        floor = self.fence_floor
        return DistributedLock(
            f"{TRAINING_PURPOSE}:{config}",
            ttl=r.ttl if r else 60.0,
            backend=backend,
            lock_dir=self.lock_dir,
            on_lost=on_lost,
            fence_floor=(lambda: floor(config)) if floor is not None else None,
            **kwargs,
        )
