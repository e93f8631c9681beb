"""Redis lease backend: atomic acquire + fencing token, owner-checked renew/release.

Fencing tokens (strictly increasing per lock name, never backwards), chosen in
the acquire script itself so the lease and its token are one atomic step:

    token = max(INCR fence, hard_floor + 1, redis TIME in ms)   if the counter exists
    token = max(local_ceiling + 1, hard_floor + 1, TIME ms)     if it does not

* ``INCR`` orders acquisitions while Redis keeps its state.
* A missing counter means first use *or Redis restarted empty*; then the
  node-local durable ceiling (:mod:`daemon.locks.fencing`, >= every token issued on
  this node) restarts the sequence above everything this node ever issued.
  The client sends its cached ceiling; only when the counter is missing does
  the script refuse a cached value (``-1``, nothing written) so the client
  re-reads the file and retries: no file read on the hot path.
* ``hard_floor`` is the optional ``fence_floor()`` hook (the registry's highest
  accepted token): never issue a token the resource would already reject.
* ``TIME`` in ms (``fence_clock=True``, the default) keeps tokens rising across
  *nodes* after an empty restart, even for a node whose own ceiling is old. It
  relies on the Redis host's clock not stepping back by more than the gap since
  the previous token; the other two terms cover that case on the same node.
  Tokens then look like epoch milliseconds (< 2**53, safe in JSON and SQLite).

Not for Redis Cluster: the three keys are not hash-tagged into one slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis
import redis.asyncio as aredis
import structlog
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from daemon.locks.backend import BackendOptions, Grant
from daemon.locks.fencing import FenceCeiling
from daemon.locks.lease import LeaseHandle, LeaseState
from daemon.locks.names import Backend, redis_keys

log = structlog.get_logger(__name__)

REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError)
RENEW_ERRORS: tuple[type[Exception], ...] = (TimeoutError, redis.RedisError, OSError)

ACQUIRE_LUA = """
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
local fence
if redis.call('EXISTS', KEYS[3]) == 1 then
  fence = redis.call('INCR', KEYS[3])
else
  fence = tonumber(ARGV[3]) + 1
end
local hard = tonumber(ARGV[4]) + 1
if hard > fence then fence = hard end
if ARGV[5] == '1' then
  local t = redis.call('TIME')
  local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if ms > fence then fence = ms end
end
local f = string.format('%.0f', fence)
redis.call('SET', KEYS[3], f)
redis.call('HSET', KEYS[2], 'owner', ARGV[1], 'token', f, 'info', ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return f
"""

RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
"""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # Redis's script id, not security


SHAS = {script: _sha(script) for script in (ACQUIRE_LUA, RENEW_LUA, RELEASE_LUA)}


def _run(client: redis.Redis, script: str, numkeys: int, *args: Any) -> Any:
    try:
        return client.evalsha(SHAS[script], numkeys, *args)
    except redis.exceptions.NoScriptError:  # first use, or Redis restarted empty
        return client.eval(script, numkeys, *args)


async def _run_async(client: aredis.Redis, script: str, numkeys: int, *args: Any) -> Any:
    try:
        return await client.evalsha(SHAS[script], numkeys, *args)
    except redis.exceptions.NoScriptError:
        return await client.eval(script, numkeys, *args)


def sync_client(url: str, password: str | None, timeout: float) -> redis.Redis:
    # No client-side retries: a renewal must fail fast and be judged by LeaseState.
    return redis.Redis.from_url(
        url,
        password=password,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def async_client(url: str, password: str | None, timeout: float) -> aredis.Redis:
    return aredis.Redis.from_url(
        url,
        password=password,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=AsyncRetry(NoBackoff(), 0),
    )


class RedisLeaseOps:
    """The three scripts for one lock name; one owner token per acquisition."""

    def __init__(
        self,
        name: str,
        *,
        key_prefix: str,
        ttl: float,
        ceiling: FenceCeiling,
        fence_floor: Callable[[], int] | None,
        fence_clock: bool,
    ) -> None:
        self.name = name
        self.lease_key, self.info_key, self.fence_key = redis_keys(key_prefix, name)
        self.ttl_ms = max(1, round(ttl * 1000))
        self.ceiling = ceiling
        self.fence_floor = fence_floor
        self.fence_clock = fence_clock

    def _acquire_args(self, owner: str, info: dict[str, Any], fresh: bool) -> list[Any]:
        hard = int(self.fence_floor()) if self.fence_floor is not None else 0
        return [
            owner,
            self.ttl_ms,
            self.ceiling.read() if fresh else self.ceiling.known,
            max(0, hard),
            int(self.fence_clock),
            orjson.dumps(info),
            "0" if fresh else "1",
        ]

    def _token(self, raw: Any) -> int | None:
        if raw is None:
            return None
        token = int(raw)
        self.ceiling.ensure_above(token)
        return token

    @property
    def _keys(self) -> list[str]:
        return [self.lease_key, self.info_key, self.fence_key]

    @staticmethod
    def new_owner() -> str:
        return secrets.token_hex(16)

    # -- sync ---------------------------------------------------------------
    def try_acquire(self, client: redis.Redis, owner: str, info: dict[str, Any]) -> int | None:
        raw = _run(client, ACQUIRE_LUA, 3, *self._keys, *self._acquire_args(owner, info, False))
        if raw == -1:  # counter missing: the cached ceiling is not good enough
            raw = _run(client, ACQUIRE_LUA, 3, *self._keys, *self._acquire_args(owner, info, True))
        return self._token(raw)

    def renew(self, client: redis.Redis, owner: str) -> bool:
        return bool(_run(client, RENEW_LUA, 2, self.lease_key, self.info_key, owner, self.ttl_ms))

    def release(self, client: redis.Redis, owner: str) -> bool:
        return bool(_run(client, RELEASE_LUA, 2, self.lease_key, self.info_key, owner))

    # -- async --------------------------------------------------------------
    async def try_acquire_async(self, client: aredis.Redis, owner: str, info: dict[str, Any]) -> int | None:
        raw = await _run_async(client, ACQUIRE_LUA, 3, *self._keys, *self._acquire_args(owner, info, False))
        if raw == -1:
            args = self._acquire_args(owner, info, True)
            raw = await _run_async(client, ACQUIRE_LUA, 3, *self._keys, *args)
        return self._token(raw)

    async def renew_async(self, client: aredis.Redis, owner: str) -> bool:
        r = await _run_async(client, RENEW_LUA, 2, self.lease_key, self.info_key, owner, self.ttl_ms)
        return bool(r)

    async def release_async(self, client: aredis.Redis, owner: str) -> bool:
        r = await _run_async(client, RELEASE_LUA, 2, self.lease_key, self.info_key, owner)
        return bool(r)


def renew_step(ops: RedisLeaseOps, client: redis.Redis, owner: str, handle: LeaseHandle) -> None:
    """Act on one lease if it is due: declare the loss by the clock, or renew (blocking)."""
    sent = time.monotonic()
    if handle.apply(LeaseState.on_tick, sent) or handle.state.lost or handle.released:
        return
    if sent < handle.state.next_action_at(sent):
        return
    try:
        ok = ops.renew(client, owner)
    except REDIS_ERRORS as e:
        log.warning("lock.renew_failed", lock=ops.name, error=str(e))
        handle.apply(LeaseState.on_renew_error, time.monotonic())
        return
    except Exception:  # never die silently: the holder would keep believing
        log.exception("lock.renew_crashed", lock=ops.name)
        handle.lose("renewer crashed")
        return
    if ok:
        handle.apply(LeaseState.on_renew_ok, sent)
    else:
        handle.apply(LeaseState.on_renew_rejected, time.monotonic())


class RenewerThread:
    """One daemon thread per lock object, serving one lease at a time.

    Starting a thread per acquisition cost more than the Redis round trips, and
    so did waking it: ``serve``/``done`` only swap the job, and the thread finds
    it on its own, never sleeping longer than ``poll`` (< ttl/3, the first
    renewal). A lock held for less than that never wakes the thread at all.
    The per-acquisition state (owner token, :class:`LeaseHandle`) is fresh for
    every lease, so nothing leaks from one holder to the next.
    """

    def __init__(self, ops: RedisLeaseOps, client: redis.Redis, poll: float) -> None:
        self._ops = ops
        self._client = client
        self._poll = poll
        self._cv = threading.Condition()
        self._job: tuple[str, LeaseHandle] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def serve(self, owner: str, handle: LeaseHandle) -> None:
        with self._cv:
            self._job = (owner, handle)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"lock-renew:{self._ops.name}", daemon=True
            )
            self._thread.start()

    def done(self, handle: LeaseHandle) -> None:
        with self._cv:
            if self._job is not None and self._job[1] is handle:
                self._job = None

    def close(self, timeout: float) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                if self._closed:
                    return
                job = self._job
            wait = self._poll
            if job is not None:
                owner, handle = job
                renew_step(self._ops, self._client, owner, handle)
                now = time.monotonic()
                wait = min(wait, max(0.0, handle.state.next_action_at(now) - now))
            with self._cv:
                if not self._closed:
                    self._cv.wait(wait)


async def renew_task(ops: RedisLeaseOps, client: aredis.Redis, owner: str, handle: LeaseHandle) -> None:
    """The asyncio renewer: every ttl/3; each call bounded by the time left on the lease."""
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time()
        if handle.apply(LeaseState.on_tick, now) or handle.state.lost or handle.released:
            return
        await asyncio.sleep(max(0.0, handle.state.next_action_at(now) - now))
        sent = loop.time()
        if handle.apply(LeaseState.on_tick, sent) or handle.state.lost or handle.released:
            return
        try:
            ok = await asyncio.wait_for(
                ops.renew_async(client, owner), timeout=max(0.001, handle.state.expires_at - sent)
            )
        except RENEW_ERRORS as e:
            log.warning("lock.renew_failed", lock=ops.name, error=str(e) or type(e).__name__)
            handle.apply(LeaseState.on_renew_error, loop.time())
            continue
        if ok:
            handle.apply(LeaseState.on_renew_ok, sent)
        else:
            handle.apply(LeaseState.on_renew_rejected, loop.time())


class RedisBackend:
    """:class:`~daemon.locks.backend.LeaseBackend` on Redis: the scripts above, a renewer
    thread for sync holders and an asyncio task for async ones. Connections are made on
    first use and kept across sequential acquisitions of the same lock object."""

    kind: Backend = "redis"
    errors: tuple[type[Exception], ...] = REDIS_ERRORS

    def __init__(self, options: BackendOptions) -> None:
        self.ops = RedisLeaseOps(
            options.name,
            key_prefix=options.key_prefix,
            ttl=options.ttl,
            ceiling=options.ceiling,
            fence_floor=options.fence_floor,
            fence_clock=options.fence_clock,
        )
        self.ttl = options.ttl
        self.info_ttl: float | None = options.ttl
        self._url = options.redis_url or ""
        self._password = options.password
        self._timeout = options.op_timeout
        self._client: redis.Redis | None = None
        self._aclient: aredis.Redis | None = None
        self._renewer: RenewerThread | None = None
        self._task: asyncio.Task[None] | None = None

    def new_state(self, sent: float) -> LeaseState:
        return LeaseState(ttl=self.ttl, last_ok=sent)

    def _sync(self) -> redis.Redis:
        if self._client is None:
            self._client = sync_client(self._url, self._password, self._timeout)
        return self._client

    def _async(self) -> aredis.Redis:
        if self._aclient is None:
            self._aclient = async_client(self._url, self._password, self._timeout)
        return self._aclient

    def _released(self, ok: bool, grant: Grant, handle: LeaseHandle) -> None:
        if not ok and not handle.state.lost:
            log.warning("lock.release_not_owner", lock=self.ops.name, token=grant.token)

    # -- sync ---------------------------------------------------------------
    def try_acquire(self, info: dict[str, Any]) -> Grant | None:
        client = self._sync()
        owner = RedisLeaseOps.new_owner()
        try:
            token = self.ops.try_acquire(client, owner, info)
        except BaseException:
            try:  # the reply may have been lost after the key was set
                self.ops.release(client, owner)
            except Exception:
                pass
            raise
        return None if token is None else Grant(token, owner)

    def hold(self, grant: Grant, handle: LeaseHandle) -> None:
        if self._renewer is None:
            self._renewer = RenewerThread(self.ops, self._sync(), poll=self.ttl / 6)
        self._renewer.serve(grant.proof, handle)

    def release(self, grant: Grant, handle: LeaseHandle) -> None:
        try:
            if self._client is not None:
                try:
                    self._released(self.ops.release(self._client, grant.proof), grant, handle)
                except REDIS_ERRORS as e:
                    log.warning("lock.release_failed", lock=self.ops.name, error=str(e))  # the TTL cleans up
        finally:
            if self._renewer is not None:
                self._renewer.done(handle)

    def close(self) -> None:
        if self._renewer is not None:
            self._renewer.close(timeout=self._timeout + 1.0)
            self._renewer = None
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- async --------------------------------------------------------------
    async def try_acquire_async(self, info: dict[str, Any]) -> Grant | None:
        client = self._async()
        owner = RedisLeaseOps.new_owner()
        try:
            token = await self.ops.try_acquire_async(client, owner, info)
        except BaseException:
            try:
                await asyncio.shield(self.ops.release_async(client, owner))
            except (asyncio.CancelledError, redis.RedisError, OSError):
                pass
            raise
        return None if token is None else Grant(token, owner)

    async def hold_async(self, grant: Grant, handle: LeaseHandle) -> None:
        self._task = asyncio.create_task(renew_task(self.ops, self._async(), grant.proof, handle))

    async def release_async(self, grant: Grant, handle: LeaseHandle) -> None:
        task, self._task = self._task, None
        try:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if self._aclient is not None:
                try:
                    # Shielded: a cancelled caller must not leave the key held until the TTL.
                    ok = await asyncio.shield(self.ops.release_async(self._aclient, grant.proof))
                    self._released(ok, grant, handle)
                except REDIS_ERRORS as e:
                    log.warning("lock.release_failed", lock=self.ops.name, error=str(e))
        finally:
            if self._renewer is not None:
                self._renewer.done(handle)

    async def aclose(self) -> None:
        if self._renewer is not None:
            await asyncio.to_thread(self._renewer.close, self._timeout + 1.0)
            self._renewer = None
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None
        if self._client is not None:
            self._client.close()
            self._client = None
