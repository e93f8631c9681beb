"""Per-config leases with fencing: Redis (preferred) or a node-local ``flock``.

Public API: :class:`DistributedLock` (sync and async), backend selection and the
listing behind ``ringrift-daemon locks``. Backends live in :mod:`daemon.locks.backends`
behind the :class:`~daemon.locks.backend.LeaseBackend` protocol.
"""

from daemon.locks.admin import BackendSelection, list_locks, select_backend
from daemon.locks.lock import DEFAULT_LOCK_DIR, DistributedLock
from daemon.locks.names import (
    FenceStateError,
    InvalidLockName,
    LockBackendUnavailable,
    LockError,
    LockNotAcquired,
    LockStateError,
    validate_lock_name,
)

__all__ = [
    "DEFAULT_LOCK_DIR",
    "BackendSelection",
    "DistributedLock",
    "FenceStateError",
    "InvalidLockName",
    "LockBackendUnavailable",
    "LockError",
    "LockNotAcquired",
    "LockStateError",
    "list_locks",
    "select_backend",
    "validate_lock_name",
]
