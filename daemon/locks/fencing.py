"""The node-local durable floor for fencing tokens (``{lock_dir}/fence/{stem}.fence``).

Why a *reservation ceiling* and not "the last token": the file must hold a value
at least as large as every token ever issued here, so after Redis restarts empty
the next token can start above it. Writing it durably (tmp + fsync + rename +
dir fsync, ~0.5 ms) on every acquisition would dominate the lock's latency, so
when a token reaches the stored ceiling we store ``token + reserve`` instead:
one durable write per ``reserve`` tokens. A restart then skips ahead by at most
``reserve`` - harmless, since tokens only need to increase.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from daemon.locks.names import FenceStateError

DEFAULT_RESERVE = 100_000


class FenceCeiling:
    """Read and raise one name's ceiling; safe across processes (a guard ``flock``)."""

    def __init__(self, path: Path, reserve: int = DEFAULT_RESERVE) -> None:
        if reserve < 1:
            raise ValueError(f"reserve must be >= 1 (got {reserve})")
        self.path = path
        self.reserve = reserve
        self._guard = path.with_name(path.name + ".guard")
        # A lower bound of the stored value (the file only ever grows), so the
        # common "token is below the ceiling" case needs no file I/O at all.
        self._known = 0

    @property
    def known(self) -> int:
        """The last value read or written here: <= the stored ceiling, maybe stale-low."""
        return self._known

    def read(self) -> int:
        """The stored ceiling (0 when the file does not exist yet)."""
        try:
            with open(self.path, "rb") as f:
                text = f.read(64).decode("ascii", "replace")
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise FenceStateError(self.path, f"cannot read: {e.strerror}") from None
        try:
            value = int(text.strip())
        except ValueError:
            raise FenceStateError(self.path, f"not an integer ceiling: {text[:40]!r}") from None
        if value < 0:
            raise FenceStateError(self.path, f"negative ceiling {value}")
        self._known = max(self._known, value)
        return value

    def ensure_above(self, token: int) -> int:
        """Make the stored ceiling > ``token`` (durably); return the ceiling."""
        if token < self._known:
            return self._known
        current = self.read()
        if token < current:
            return current
        with self._locked():
            current = self.read()
            if token < current:
                return current
            new = token + self.reserve
            self._write(new)
            self._known = new
            return new

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._guard, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _write(self, value: int) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, f"{value}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def ceiling_for(lock_dir: Path, stem: str, reserve: int = DEFAULT_RESERVE) -> FenceCeiling:
    return FenceCeiling(lock_dir / "fence" / f"{stem}.fence", reserve)
