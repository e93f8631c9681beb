"""The lease backend protocol and the table that picks an implementation by name.

:class:`~daemon.locks.lock.DistributedLock` runs the retry loop, the holder
bookkeeping and the fallback; a backend only knows how to take, keep and give
back one lease of one name. The table maps a backend name to its import string
(uvicorn's ``config.py`` shape), so adding a backend is one line and nothing
imports Redis code for a file lock.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from daemon.locks.fencing import FenceCeiling
from daemon.locks.lease import LeaseHandle, LeaseState
from daemon.locks.names import Backend
from daemon.redis_keys import DEFAULT_PREFIX

BACKENDS: dict[Backend, str] = {
    "redis": "daemon.locks.backends.redis:RedisBackend",
    "file": "daemon.locks.backends.file:FileBackend",
}


@dataclass(frozen=True)
class Grant:
    """One successful acquisition: its fencing token and the backend's proof of ownership
    (the random owner token on Redis, the open descriptor of a file lock)."""

    token: int
    proof: Any


@dataclass(frozen=True)
class BackendOptions:
    """Everything a backend may need; each takes the fields it uses."""

    name: str
    ttl: float
    lock_dir: Path
    ceiling: FenceCeiling
    fence_floor: Callable[[], int] | None
    redis_url: str | None = None
    password: str | None = None
    key_prefix: str = DEFAULT_PREFIX
    op_timeout: float = 2.0
    fence_clock: bool = True


class LeaseBackend(Protocol):
    """One lock name on one backend. ``errors`` are the exceptions that mean the backend
    itself is unreachable (the caller falls back or fails closed on them)."""

    kind: Backend
    errors: tuple[type[Exception], ...]
    info_ttl: float | None

    def new_state(self, sent: float) -> LeaseState: ...
    def try_acquire(self, info: dict[str, Any]) -> Grant | None: ...
    def hold(self, grant: Grant, handle: LeaseHandle) -> None: ...
    def release(self, grant: Grant, handle: LeaseHandle) -> None: ...
    def close(self) -> None: ...
    async def try_acquire_async(self, info: dict[str, Any]) -> Grant | None: ...
    async def hold_async(self, grant: Grant, handle: LeaseHandle) -> None: ...
    async def release_async(self, grant: Grant, handle: LeaseHandle) -> None: ...
    async def aclose(self) -> None: ...


def load_backend(kind: Backend, options: BackendOptions) -> LeaseBackend:
    module, _, attr = BACKENDS[kind].partition(":")
    cls: Callable[[BackendOptions], LeaseBackend] = getattr(importlib.import_module(module), attr)
    return cls(options)
