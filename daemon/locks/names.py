"""Lock names, errors and holder info shared by the Redis and file backends."""

from __future__ import annotations

import os
import re
import socket
from datetime import UTC, datetime
from typing import Any, Literal

from daemon.keys import validate_config_key
from daemon.redis_keys import lock_keys

Backend = Literal["redis", "file"]
BackendChoice = Literal["auto", "redis", "file"]

# Segments of [a-z0-9-] joined by ':'. '_' is reserved for the training names'
# config keys, so ':' -> '_' in file names can never make two names collide.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}(:[a-z0-9][a-z0-9-]{0,63}){0,3}$")
TRAINING_PREFIX = "training:"


class LockError(Exception):
    """Base class of every lock error."""


class InvalidLockName(LockError, ValueError):
    def __init__(self, name: object, why: str) -> None:
        self.name = name
        super().__init__(f"invalid lock name {name!r}: {why}")


class LockNotAcquired(LockError):
    """``with DistributedLock(...)`` could not take the lock before its timeout."""

    def __init__(self, name: str, timeout: float | None, backend: str | None) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(
            f"lock {name!r} not acquired within {timeout}s (backend {backend}): held by another holder"
        )


class LockBackendUnavailable(LockError):
    """The configured backend cannot be used (fail closed): no lock, no training."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"lock backend {backend} unavailable: {reason}")


class LockStateError(LockError):
    """Misuse: acquiring a lock object twice, releasing one that is not held, ..."""


class FenceStateError(LockError):
    """The local fencing high-water file is unreadable: refuse to issue tokens."""

    def __init__(self, path: os.PathLike[str] | str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


# ``{purpose}:{config key}`` (training:, export:, selfplay: ...): the one place '_' may appear.
_PURPOSE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def _is_config_key(text: str) -> bool:
    try:
        validate_config_key(text)
    except ValueError:
        return False
    return True


def validate_lock_name(name: object) -> str:
    """``{purpose}:{config key}`` (the key validated) or a strict ``seg[:seg]`` name; else
    :class:`InvalidLockName`."""
    if not isinstance(name, str):
        raise InvalidLockName(name, "must be a string")
    purpose, sep, rest = name.partition(":")
    if sep and "_" in rest and _PURPOSE_RE.fullmatch(purpose):
        try:
            validate_config_key(rest)
        except ValueError as e:
            raise InvalidLockName(name, str(e)) from None
        return name
    if name == "training" or not _NAME_RE.fullmatch(name):
        raise InvalidLockName(name, "expected {purpose}:<config key> or segments of [a-z0-9-] joined by ':'")
    segs = name.split(":")
    if len(segs) == 3 and _is_config_key(f"{segs[1]}_{segs[2]}"):
        # Its file stem would be that of {purpose}:{config key}: the two would share one lock file.
        raise InvalidLockName(name, f"ambiguous with {segs[0]}:{segs[1]}_{segs[2]}")
    if name.startswith(TRAINING_PREFIX):
        raise InvalidLockName(name, "expected training:<config key>")
    return name


def file_stem(name: str) -> str:
    """``training:square8_2p`` -> ``training_square8_2p`` (injective over valid names)."""
    return validate_lock_name(name).replace(":", "_")


def redis_keys(prefix: str, name: str) -> tuple[str, str, str]:
    """(lease key, holder-info key, fence counter key)."""
    return lock_keys(prefix, validate_lock_name(name))


def holder_info(name: str, backend: Backend, ttl: float | None, host: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "host": host or socket.gethostname(),
        "pid": os.getpid(),
        "acquired_at": datetime.now(UTC).isoformat(),
        "backend": backend,
        "ttl": ttl,
    }
