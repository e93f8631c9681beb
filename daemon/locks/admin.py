"""Backend selection and the listing of held locks (both backends) behind ``ringrift-daemon locks``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import redis
import structlog

from daemon.locks.backends.file import inspect_lock_file
from daemon.locks.backends.redis import REDIS_ERRORS, sync_client
from daemon.locks.names import Backend, BackendChoice, validate_lock_name
from daemon.redis_keys import DEFAULT_PREFIX, lease_pattern, lock_keys, lock_name_of
from daemon.registry.records import FencingTokenRejected

log = structlog.get_logger(__name__)

DEFAULT_PROBE_TIMEOUT = 0.5


@dataclass(frozen=True)
class BackendSelection:
    """What a lock would use now. ``available`` False means fail closed (no training)."""

    requested: BackendChoice
    backend: Backend
    available: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def refused(e: BaseException) -> bool:
    """Redis answered and refused (wrong or missing password, ACL, a command error), as opposed
    to not being reachable: a refusal is a configuration error and never a reason to fall back
    to node-local file locks (which would let two nodes train one config)."""
    return isinstance(e, redis.AuthenticationError | redis.ResponseError)


def redis_ping(url: str, password: str | None, timeout: float) -> str | None:
    """None when Redis answers PING within ``timeout``, else the reason (never the password)."""
    problem = _ping(url, password, timeout)
    return None if problem is None else problem[0]


def _ping(url: str, password: str | None, timeout: float) -> tuple[str, bool] | None:
    """None when PING answers; else (reason, refused)."""
    client = sync_client(url, password, timeout)
    try:
        client.ping()
    except REDIS_ERRORS as e:
        if refused(e):
            return f"{url} refused the connection: {type(e).__name__}: {e}", True
        return f"{url} unreachable: {type(e).__name__}: {e}", False
    finally:
        client.close()
    return None


def select_backend(
    backend: BackendChoice,
    redis_url: str | None,
    *,
    password: str | None = None,
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
) -> BackendSelection:
    """auto: Redis when a URL is given and answers PING, else file (warning); redis: fail closed.

    A Redis that answers but refuses (authentication) fails closed under ``auto`` too: only
    "no Redis configured" or "not reachable" may fall back.
    """
    if backend == "file":
        return BackendSelection("file", "file", True, "file locks configured")
    if redis_url is None:
        if backend == "redis":
            return BackendSelection(
                "redis", "redis", False, "locks.backend is redis but no redis URL is configured"
            )
        return BackendSelection("auto", "file", True, "no redis configured: file locks (one host only)")
    problem = _ping(redis_url, password, probe_timeout)
    if problem is None:
        return BackendSelection(backend, "redis", True, f"{redis_url} reachable")
    reason, was_refused = problem
    if backend == "redis" or was_refused:
        return BackendSelection(backend, "redis", False, reason)
    log.warning("lock.backend_fallback", url=redis_url, reason=reason)
    return BackendSelection("auto", "file", True, f"{reason}: fell back to file locks (one host only)")


def list_file_locks(lock_dir: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not lock_dir.is_dir():
        return out
    for path in sorted(lock_dir.glob("*.lock")):
        try:
            probe = inspect_lock_file(path)
        except OSError as e:
            out.append(
                {"name": path.stem, "backend": "file", "held": None, "error": str(e), "path": str(path)}
            )
            continue
        if not probe["held"]:
            continue
        info = probe["info"] or {}
        out.append(
            {
                "name": info.get("name", path.stem),
                "backend": "file",
                "held": True,
                "token": info.get("token"),
                "holder": _holder(info),
                "acquired_at": info.get("acquired_at"),
                "ttl_left": None,
                "path": str(path),
            }
        )
    return out


def list_redis_locks(
    redis_url: str, key_prefix: str, password: str | None, timeout: float
) -> list[dict[str, Any]]:
    client = sync_client(redis_url, password, timeout)
    try:
        out: list[dict[str, Any]] = []
        for raw_key in client.scan_iter(match=lease_pattern(key_prefix), count=500):
            key = raw_key.decode() if isinstance(raw_key, bytes) else str(raw_key)
            name = lock_name_of(key_prefix, key)
            pttl = int(client.pttl(key))
            fields = client.hgetall(lock_keys(key_prefix, name)[1])
            raw_info = fields.get(b"info")
            info = orjson.loads(raw_info) if raw_info else {}
            token = fields.get(b"token")
            out.append(
                {
                    "name": name,
                    "backend": "redis",
                    "held": True,
                    "token": int(token) if token is not None else None,
                    "holder": _holder(info),
                    "acquired_at": info.get("acquired_at"),
                    "ttl_left": pttl / 1000.0 if pttl >= 0 else None,
                }
            )
        return sorted(out, key=lambda d: d["name"])
    finally:
        client.close()


def _holder(info: dict[str, Any]) -> str | None:
    if "host" not in info:
        return None
    return f"{info['host']}:{info.get('pid')}"


def list_locks(
    lock_dir: Path,
    redis_url: str | None = None,
    key_prefix: str = DEFAULT_PREFIX,
    password: str | None = None,
    timeout: float = 2.0,
) -> list[dict[str, Any]]:
    """Held locks of both backends: name, backend, holder, token, ttl_left (None for file locks).

    Raises the Redis error when a URL is given and Redis cannot be read.
    """
    rows = list_file_locks(lock_dir)
    if redis_url is not None:
        rows += list_redis_locks(redis_url, key_prefix, password, timeout)
    return rows


class ClusterFence:
    """Refuse a registration whose token is older than the newest one Redis issued for the lock.

    Each node keeps its own registry, so this is the cluster-wide fence; it runs inside the
    registry's write transaction. It fails closed: if Redis cannot confirm, the lease cannot be
    trusted either. Blocking (one GET).
    """

    def __init__(self, url: str, password: str | None, key_prefix: str, timeout: float) -> None:
        self.url, self.password, self.key_prefix, self.timeout = url, password, key_prefix, timeout

    def __call__(self, config: str, token: int | None) -> None:
        if token is None:
            return
        fence_key = lock_keys(self.key_prefix, validate_lock_name(f"training:{config}"))[2]
        client = sync_client(self.url, self.password, self.timeout)
        try:
            raw = client.get(fence_key)
        except REDIS_ERRORS as e:
            raise FencingTokenRejected(config, token, -1) from e
        finally:
            client.close()
        issued = int(raw) if raw is not None else 0
        if token < issued:
            raise FencingTokenRejected(config, token, issued)
