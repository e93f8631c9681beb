"""Content-addressed model files on a filesystem path (local disk or a shared mount such as NFS).

Objects are ``<dir>/<sha256>.pt``, immutable, published by temp file + fsync + rename + dir
fsync. A temp file (``.tmp-<pid>-<uuid>.pt``) is flock-ed by its writer for its whole life, so
a sweeper can tell a dead writer's leftover (lock free) from one in progress (lock held)
without any clock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from daemon.registry.records import RegistryError, file_sha256
from daemon.registry.store import Staged

TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileObjectStore:
    """Objects as files in one directory (see the module docstring)."""

    def __init__(self, location: str) -> None:
        self.dir = Path(location)

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def locate(self, digest: str) -> str:
        return str(self.path_for(digest))

    def path_for(self, digest: str) -> Path:
        return self.dir / f"{digest}.pt"

    def stage(self, src: Path) -> Staged:
        """Copy ``src`` to a locked temp file in the objects dir, hashing as it goes, and fsync it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = self.dir / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}.pt"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A sweeper may have unlinked the file between create and flock: then start over.
            try:
                if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            h = hashlib.sha256()
            size = 0
            with src.open("rb") as f, os.fdopen(fd, "wb", closefd=False) as out:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(fd)
            if size == 0:
                raise RegistryError(f"model file {src}: empty")
        except BaseException:
            tmp.unlink(missing_ok=True)
            os.close(fd)
            raise
        return Staged(tmp, fd, h.hexdigest(), size)

    def publish(self, staged: Staged) -> bool:
        """Rename the temp file to its digest name and fsync the dir. False if already stored (dedup).

        Callers hold the registry's write lock, so no GC runs concurrently."""
        final = self.path_for(staged.digest)
        try:
            present = final.stat().st_size == staged.size
        except FileNotFoundError:
            present = False
        if present:  # same digest, same bytes: keep the stored copy
            staged.path.unlink()
            return False
        os.replace(staged.path, final)
        fsync_dir(self.dir)
        return True

    def release(self, staged: Staged) -> None:
        """Drop the temp file if still there (failure paths) and release its lock."""
        try:
            staged.path.unlink(missing_ok=True)
        finally:
            os.close(staged.fd)

    def remove(self, digest: str) -> None:
        self.path_for(digest).unlink(missing_ok=True)

    def objects(self) -> Iterator[tuple[str, float]]:
        """``(digest, mtime)`` of every stored object (no temp files)."""
        for p in sorted(self.dir.glob("*.pt")):
            if p.name.startswith(TMP_PREFIX):
                continue
            try:
                yield p.stem, p.stat().st_mtime
            except FileNotFoundError:
                continue

    def check(self, digest: str, size: int) -> str | None:
        """None if the stored file matches, else ``missing`` / ``size_mismatch`` / ``digest_mismatch``."""
        p = self.path_for(digest)
        try:
            if p.stat().st_size != size:
                return "size_mismatch"
        except FileNotFoundError:
            return "missing"
        return None if file_sha256(p) == digest else "digest_mismatch"

    def sweep_temp(self) -> list[str]:
        """Remove temp files whose writer is gone (their flock is free)."""
        removed: list[str] = []
        for p in sorted(self.dir.glob(f"{TMP_PREFIX}*")):
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                p.unlink(missing_ok=True)
                removed.append(str(p))
            except BlockingIOError:
                pass  # a live writer holds it
            finally:
                os.close(fd)
        return removed
