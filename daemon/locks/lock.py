"""``DistributedLock``: a Redis lease with fencing tokens, or a local ``flock`` fallback.

One object per holder: each acquisition gets a fresh owner token and its own
lease state (see the redis-py shared-``Lock`` pitfall); acquiring an object
that is already held raises :class:`LockStateError`. Sequential reuse of one
object (acquire, release, acquire ...) is fine and keeps its connection pool.

The lock is an *efficiency* lock ("don't train one config twice at once").
Correctness comes from the fencing token: the resource (model registry)
rejects a write carrying a token lower than one it has accepted. A holder that
loses its lease is told (``on_lost(reason)`` once, ``.lost``, ``lost_event``,
``await wait_lost()``) and must stop.

Redis unavailable: ``backend="redis"`` fails closed with
:class:`LockBackendUnavailable`; ``"auto"`` falls back to file locks with a
``lock.backend_fallback`` warning.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from daemon.locks.admin import BackendSelection, refused, select_backend
from daemon.locks.backend import BackendOptions, Grant, LeaseBackend, load_backend
from daemon.locks.fencing import DEFAULT_RESERVE, ceiling_for
from daemon.locks.lease import LeaseHandle, LostCallback
from daemon.locks.names import (
    Backend,
    BackendChoice,
    LockBackendUnavailable,
    LockNotAcquired,
    LockStateError,
    file_stem,
    holder_info,
    validate_lock_name,
)
from daemon.redis_keys import DEFAULT_PREFIX

log = structlog.get_logger(__name__)
DEFAULT_LOCK_DIR = Path("data/locks")


class DistributedLock:
    """``with DistributedLock("training:square8_2p", redis_url=...) as lock: run(lock.fencing_token)``."""

    def __init__(
        self,
        name: str,
        *,
        ttl: float = 60.0,
        backend: BackendChoice = "auto",
        redis_url: str | None = None,
        lock_dir: Path | str | None = None,
        key_prefix: str = DEFAULT_PREFIX,
        password: str | None = None,
        on_lost: LostCallback | None = None,
        fence_floor: Callable[[], int] | None = None,
        blocking_timeout: float | None = 60.0,
        retry_interval: float = 0.05,
        connect_timeout: float = 2.0,
        probe_timeout: float = 0.5,
        fence_clock: bool = True,
        fence_reserve: int = DEFAULT_RESERVE,
        host: str | None = None,
    ) -> None:
        if backend not in ("auto", "redis", "file"):
            raise ValueError(f"backend must be auto, redis or file (got {backend!r})")
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds (got {ttl!r})")
        self.name = validate_lock_name(name)
        self.ttl = float(ttl)
        self.requested: BackendChoice = backend
        self.redis_url = redis_url
        self.lock_dir = Path(lock_dir) if lock_dir is not None else DEFAULT_LOCK_DIR
        self.key_prefix = key_prefix
        self._password = password
        self.on_lost = on_lost
        self.blocking_timeout = blocking_timeout
        self.retry_interval = retry_interval
        self.connect_timeout = connect_timeout
        self.probe_timeout = probe_timeout
        self.host = host or socket.gethostname()
        self._options = BackendOptions(
            name=self.name,
            ttl=self.ttl,
            lock_dir=self.lock_dir,
            ceiling=ceiling_for(self.lock_dir, file_stem(self.name), fence_reserve),
            fence_floor=fence_floor,
            redis_url=redis_url,
            password=password,
            key_prefix=key_prefix,
            op_timeout=self._op_timeout(),
            fence_clock=fence_clock,
        )
        self._resolved: Backend | None = "file" if backend == "file" else None
        self._backends: dict[Backend, LeaseBackend] = {}
        self.selection: BackendSelection | None = None
        self._handle: LeaseHandle | None = None
        self._grant: Grant | None = None
        self._holder: LeaseBackend | None = None
        self._info: dict[str, Any] | None = None
        self._token: int | None = None
        self._acquired_mono = 0.0

    # -- properties -----------------------------------------------------------
    @property
    def backend(self) -> Backend | None:
        """The backend in use ("redis" or "file"); None until the first acquire chose one."""
        return self._resolved

    @property
    def fencing_token(self) -> int | None:
        """Token of the current (or last) acquisition."""
        return self._token

    @property
    def held(self) -> bool:
        return self._handle is not None and not self.lost

    @property
    def lost(self) -> bool:
        h = self._handle
        return h is not None and h.is_lost(time.monotonic())

    @property
    def lost_event(self) -> threading.Event:
        return self._handle.lost_event if self._handle is not None else threading.Event()

    @property
    def holder_info(self) -> dict[str, Any] | None:
        return dict(self._info) if self._info is not None and self._handle is not None else None

    async def wait_lost(self) -> None:
        """Return when the lease held by ``acquire_async`` is lost."""
        h = self._handle
        if h is None or h.async_lost is None:
            raise LockStateError(f"lock {self.name!r} is not held through acquire_async")
        await h.async_lost.wait()

    # -- selection ------------------------------------------------------------
    def _select(self) -> Backend:
        if self._resolved is None:
            sel = select_backend(
                self.requested, self.redis_url, password=self._password, probe_timeout=self.probe_timeout
            )
            self.selection = sel
            if not sel.available:
                raise LockBackendUnavailable(sel.backend, sel.reason)
            self._resolved = sel.backend
            log.info("lock.backend_selected", lock=self.name, backend=sel.backend, reason=sel.reason)
        return self._resolved

    def _impl(self) -> LeaseBackend:
        kind = self._select()
        impl = self._backends.get(kind)
        if impl is None:
            impl = self._backends[kind] = load_backend(kind, self._options)
        return impl

    def _fallback(self, err: BaseException) -> None:
        """The backend failed mid-acquire: auto falls back to file, redis fails closed."""
        if self.requested != "auto" or refused(err):  # a refusal (auth) is not "Redis is down"
            raise LockBackendUnavailable("redis", f"{self.redis_url}: {type(err).__name__}: {err}") from err
        log.warning("lock.backend_fallback", lock=self.name, url=self.redis_url, reason=str(err))
        self._resolved = "file"

    def _check_free(self) -> None:
        if self._handle is not None:
            raise LockStateError(
                f"lock {self.name!r} is already held by this object; use one object per holder"
            )

    def _sleep_for(self, deadline: float | None) -> float | None:
        """Jittered retry delay, or None when the deadline passed."""
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return None
        delay = self.retry_interval * random.uniform(0.5, 1.5)  # jitter only
        return delay if deadline is None else min(delay, deadline - now)

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + max(0.0, timeout)

    def _new_info(self, impl: LeaseBackend) -> dict[str, Any]:
        return holder_info(self.name, impl.kind, impl.info_ttl, self.host)

    def _granted(self, impl: LeaseBackend, grant: Grant, info: dict[str, Any], sent: float) -> LeaseHandle:
        self._handle = LeaseHandle(self.name, impl.new_state(sent), self.on_lost)
        self._grant = grant
        self._holder = impl
        self._token = grant.token
        info["token"] = grant.token
        self._info = info
        self._acquired_mono = sent
        # DEBUG: the pipeline's run.started carries the token; a lock taken per
        # run should not cost two formatted INFO lines per cycle.
        log.debug("lock.acquired", lock=self.name, backend=impl.kind, token=grant.token)
        return self._handle

    # -- sync -----------------------------------------------------------------
    def acquire(self, timeout: float | None = 60.0) -> bool:
        """Block until held or ``timeout`` seconds (monotonic) pass; False on timeout."""
        self._check_free()
        deadline = self._deadline(timeout)
        while True:
            impl = self._impl()
            try:
                return self._acquire_on(impl, deadline)
            except impl.errors as e:
                self._fallback(e)

    def _acquire_on(self, impl: LeaseBackend, deadline: float | None) -> bool:
        while True:
            info = self._new_info(impl)
            sent = time.monotonic()
            grant = impl.try_acquire(info)
            if grant is not None:
                impl.hold(grant, self._granted(impl, grant, info, sent))
                return True
            delay = self._sleep_for(deadline)
            if delay is None:
                return False
            time.sleep(delay)

    def release(self) -> None:
        """Release if held (owner-checked on Redis); a no-op when not held."""
        h, grant, impl = self._handle, self._grant, self._holder
        if h is None or grant is None or impl is None:
            return
        h.mark_released()
        try:
            impl.release(grant, h)
        finally:
            self._after_release(h)

    def _after_release(self, h: LeaseHandle) -> None:
        log.debug(
            "lock.released",
            lock=self.name,
            backend=self._resolved,
            token=self._token,
            held_for=round(time.monotonic() - self._acquired_mono, 6),
            lost=h.state.lost,
        )
        self._handle = None
        self._grant = None
        self._holder = None

    def close(self) -> None:
        """Release and close the backends' connections."""
        self.release()
        for impl in self._backends.values():
            impl.close()

    def __enter__(self) -> DistributedLock:
        if not self.acquire(self.blocking_timeout):
            raise LockNotAcquired(self.name, self.blocking_timeout, self._resolved)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- async ----------------------------------------------------------------
    async def acquire_async(self, timeout: float | None = 60.0) -> bool:
        """Like :meth:`acquire` without blocking the loop; renewal runs as an asyncio task."""
        self._check_free()
        deadline = self._deadline(timeout)
        while True:
            if self._resolved is None:
                await asyncio.to_thread(self._select)
            impl = self._impl()
            try:
                return await self._acquire_on_async(impl, deadline)
            except impl.errors as e:
                self._fallback(e)

    async def _acquire_on_async(self, impl: LeaseBackend, deadline: float | None) -> bool:
        while True:
            info = self._new_info(impl)
            sent = time.monotonic()
            grant = await impl.try_acquire_async(info)
            if grant is not None:
                handle = self._granted(impl, grant, info, sent)
                handle.loop = asyncio.get_running_loop()
                handle.async_lost = asyncio.Event()
                await impl.hold_async(grant, handle)
                return True
            delay = self._sleep_for(deadline)
            if delay is None:
                return False
            await asyncio.sleep(delay)

    async def release_async(self) -> None:
        h, grant, impl = self._handle, self._grant, self._holder
        if h is None or grant is None or impl is None:
            return
        h.mark_released()
        try:
            await impl.release_async(grant, h)
        finally:
            self._after_release(h)

    async def aclose(self) -> None:
        await self.release_async()
        for impl in self._backends.values():
            await impl.aclose()

    async def __aenter__(self) -> DistributedLock:
        if not await self.acquire_async(self.blocking_timeout):
            raise LockNotAcquired(self.name, self.blocking_timeout, self._resolved)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _op_timeout(self) -> float:
        # A renewal stuck longer than a quarter TTL is as good as failed.
        return max(0.05, min(self.connect_timeout, self.ttl / 4))
