"""File backend: ``flock`` on ``{lock_dir}/{stem}.lock`` (one host only).

The lock file is never unlinked: unlinking while another process waits on the
old inode would let two processes "hold" two different files. The kernel drops
the ``flock`` when the holder's descriptor closes, including on ``kill -9``.
The file also carries the holder info (host, pid, token, acquired_at, backend),
rewritten and fsynced on every acquisition, so its last ``token`` is the local
fencing counter; the node's fence ceiling (:mod:`daemon.locks.fencing`) backs it up
if the file was torn by a crash mid-write.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from daemon.locks.backend import BackendOptions, Grant
from daemon.locks.fencing import FenceCeiling
from daemon.locks.lease import LeaseHandle, LeaseState
from daemon.locks.names import Backend, file_stem


def lock_path(lock_dir: Path, name: str) -> Path:
    return lock_dir / f"{file_stem(name)}.lock"


def _read_fd(fd: int) -> dict[str, Any] | None:
    size = os.fstat(fd).st_size
    if size == 0 or size > 1 << 16:
        return None
    try:
        data = orjson.loads(os.pread(fd, size, 0))
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


class FileLeaseOps:
    """Non-blocking acquire of one name's lock file; the returned fd *is* the lock."""

    def __init__(
        self, name: str, lock_dir: Path, ceiling: FenceCeiling, fence_floor: Callable[[], int] | None
    ) -> None:
        self.name = name
        self.path = lock_path(lock_dir, name)
        self.ceiling = ceiling
        self.fence_floor = fence_floor

    def try_acquire(self, info: dict[str, Any]) -> tuple[int, int] | None:
        """(fd, token) when the lock was free, else None. ``info`` gets the token."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            prev = _read_fd(fd)
            prev_token = prev.get("token") if prev else None
            # Unreadable/torn file: the ceiling is above every token issued here.
            base = prev_token if isinstance(prev_token, int) else self.ceiling.read()
            hard = int(self.fence_floor()) if self.fence_floor is not None else 0
            token = max(base, hard) + 1
            self.ceiling.ensure_above(token)
            info["token"] = token
            data = orjson.dumps(info) + b"\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd, token

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)  # drops the flock; the info stays as "last holder"


class FileLeaseState(LeaseState):
    """A flock cannot expire: never declares a loss by the clock."""

    @property
    def expires_at(self) -> float:
        return float("inf")


class FileBackend:
    """:class:`~daemon.locks.backend.LeaseBackend` over :class:`FileLeaseOps`."""

    kind: Backend = "file"
    errors: tuple[type[Exception], ...] = ()
    info_ttl: float | None = None

    def __init__(self, options: BackendOptions) -> None:
        self.ops = FileLeaseOps(options.name, options.lock_dir, options.ceiling, options.fence_floor)

    def new_state(self, sent: float) -> LeaseState:
        return FileLeaseState(ttl=1.0, last_ok=sent)

    def try_acquire(self, info: dict[str, Any]) -> Grant | None:
        got = self.ops.try_acquire(info)
        return None if got is None else Grant(got[1], got[0])

    def hold(self, grant: Grant, handle: LeaseHandle) -> None:
        """Nothing to renew: the kernel keeps the flock while the descriptor is open."""

    def release(self, grant: Grant, handle: LeaseHandle) -> None:
        FileLeaseOps.release(grant.proof)

    def close(self) -> None:
        """No connections to close."""

    async def try_acquire_async(self, info: dict[str, Any]) -> Grant | None:
        return await asyncio.to_thread(self.try_acquire, info)

    async def hold_async(self, grant: Grant, handle: LeaseHandle) -> None:
        self.hold(grant, handle)

    async def release_async(self, grant: Grant, handle: LeaseHandle) -> None:
        self.release(grant, handle)

    async def aclose(self) -> None:
        self.close()


def inspect_lock_file(path: Path) -> dict[str, Any]:
    """``{"held": bool, "info": {...} | None}`` by probing with a shared non-blocking flock."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
        return {"held": held, "info": _read_fd(fd)}
    finally:
        os.close(fd)
