"""One service per data directory: an exclusive ``flock`` taken before start-up recovery.

Recovery ends every run this data directory's journal has in flight and reaps the trainers it
recorded; a second service on the same directory would do that to a live first one. The lock
proves that no other process of this data directory is alive, so recovery may resolve every
run of the journal, whatever host name wrote it (a rescheduled pod gets a new one).

The kernel drops a ``flock`` when its holder dies (``kill -9`` included), so there is no stale
lock to clear. The descriptor is close-on-exec (Python's default), so trainers and export
workers never inherit it: a leftover child cannot keep a restart out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

LOCK_NAME = "instance.lock"


class InstanceLockedError(Exception):
    """Another service holds this data directory (message: one line naming the holder)."""


class InstanceLock:
    """Constructor stores; :meth:`acquire` takes the lock or raises; :meth:`release` drops it."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise InstanceLockedError(
                f"another service already runs on this data directory ({holder}; lock {self.path}); "
                "refusing to start"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Who holds it, for the refusal's message only: the flock is the lock, not this text.
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode() + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {int(info['pid'])} on {str(info['host'])[:64]} since {str(info['since'])[:40]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
