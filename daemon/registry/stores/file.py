"""Content-addressed model files on a filesystem path: local disk or a shared mount (NFS).

Objects are ``<location>/sha256/<hex>.pt``, immutable. A writer copies to a temp name unique
across nodes (``.tmp-<host>-<pid>-<uuid>.pt``, ``O_EXCL``) in that directory, fsyncs it, and
publishes by ``rename`` (atomic on one filesystem, NFS included) plus a directory fsync.
Readers therefore see a whole object or none.

``stage`` already publishes (so the config's write lock is held only for the row, not for two
fsyncs): an object no row names yet is young, and GC keeps young objects for its grace.
``publish``, under the write lock that GC also takes, only confirms the object is still there;
if the same bytes were already stored, the temp copy is kept until then, so an old orphan that
GC collects in between is simply stored again.

No file locks (``flock`` over NFS is unreliable or absent): a temp file is a dead writer's
leftover once it is older than the temp grace, which is far longer than any copy plus the
wait for the registry's write lock; ``sweep_temp`` removes only those. A writer that stalls
past the grace loses its temp file and its registration fails cleanly (no row). File times on
NFS come from the server's clock, so the grace must also cover clock skew between nodes.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from daemon.registry.records import ObjectDamaged, RegistryError
from daemon.registry.store import OBJECTS_PREFIX, Staged
from daemon.registry.stores.atomic import CHUNK, copy_verified, fsync_dir, temp_name

TMP_PREFIX = ".tmp-"


class FileObjectStore:
    """Objects as files in one directory (see the module docstring)."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.dir = Path(location) / OBJECTS_PREFIX

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def locate(self, digest: str) -> str:
        return str(self.path_for(digest))

    def path_for(self, digest: str) -> Path:
        return self.dir / f"{digest}.pt"

    def stage(self, src: Path) -> Staged:
        """Copy ``src`` to a new temp file in the objects dir, hashing as it goes, fsync it, and
        rename it to its digest name unless those bytes are already stored."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / temp_name(TMP_PREFIX, ".pt")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            h = hashlib.sha256()
            size = 0
            with src.open("rb") as f, os.fdopen(fd, "wb", closefd=False) as out:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(fd)
            if size == 0:
                raise RegistryError(f"model file {src}: empty")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        staged = Staged(h.hexdigest(), size, path=tmp)
        if not self._present(staged):
            self._rename(staged)
        return staged

    def _present(self, staged: Staged) -> bool:
        try:
            return self.path_for(staged.digest).stat().st_size == staged.size
        except FileNotFoundError:
            return False

    def _rename(self, staged: Staged) -> None:
        assert staged.path is not None
        try:
            os.replace(staged.path, self.path_for(staged.digest))
        except FileNotFoundError:
            raise RegistryError(
                f"staged copy {staged.path} vanished before publication (swept as older than the temp "
                "grace: this writer stalled too long); nothing was registered"
            ) from None
        fsync_dir(self.dir)
        staged.path, staged.created = None, True

    def publish(self, staged: Staged) -> bool:
        """Confirm the object is stored (under the registry's write lock, so no GC runs meanwhile);
        True if this registration stored it (a failed registration then drops it again)."""
        if not self._present(staged):
            if staged.path is None:
                raise RegistryError(
                    f"object {self.locate(staged.digest)} vanished before its row was committed "
                    "(collected as an orphan: this writer stalled past the GC grace); nothing was registered"
                )
            self._rename(staged)  # an old copy we deduplicated onto was collected since
        elif staged.path is not None:  # same digest, same bytes: keep the stored copy
            staged.path.unlink(missing_ok=True)
            staged.path = None
        return staged.created

    def release(self, staged: Staged) -> None:
        """Drop the temp file if still there (failure paths)."""
        if staged.path is not None:
            staged.path.unlink(missing_ok=True)

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

    def mtime(self, digest: str) -> float | None:
        try:
            return self.path_for(digest).stat().st_mtime
        except FileNotFoundError:
            return None

    def _open_object(self, digest: str) -> int:
        path = self.path_for(digest)
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            # NFS may answer from a cached negative lookup; opening the directory revalidates it
            # (close-to-open), so "missing" is only said after a fresh look.
            os.close(os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY))
            try:
                return os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise ObjectDamaged(str(path), "missing") from None

    def check(self, digest: str, size: int) -> str | None:
        """None if the stored file matches, else ``missing`` / ``size_mismatch`` / ``digest_mismatch``."""
        try:
            fd = self._open_object(digest)
        except ObjectDamaged as e:
            return e.problem
        with os.fdopen(fd, "rb") as f:
            if os.fstat(f.fileno()).st_size != size:
                return "size_mismatch"
            return None if hashlib.file_digest(f, "sha256").hexdigest() == digest else "digest_mismatch"

    def fetch(self, digest: str, size: int, dest: Path) -> None:
        """Verified copy of the object to ``dest`` (see :func:`copy_verified`)."""
        fd = self._open_object(digest)
        try:
            copy_verified(fd, digest, size, dest, self.locate(digest))
        finally:
            os.close(fd)

    def sweep_temp(self, older_than: float) -> list[str]:
        """Remove dead writers' temp files: those last written before ``older_than`` (epoch
        seconds), and at once those this host wrote from a process that no longer exists (a
        ``kill -9`` mid-copy must not leave its temp file for the whole grace)."""
        removed: list[str] = []
        for p in sorted(self.dir.glob(f"{TMP_PREFIX}*")):
            try:
                if p.stat().st_mtime >= older_than and not _dead_local_writer(p.name):
                    continue
                p.unlink()
            except FileNotFoundError:
                continue  # another sweeper (or its writer) got there first
            removed.append(str(p))
        return removed


def _dead_local_writer(name: str) -> bool:
    """``.tmp-<host>-<pid>-<uuid>.pt`` written on this host by a pid that is gone. Host names are
    unique per node (and per pod); a pid reused since is taken as alive (the file waits the grace)."""
    try:
        host, pid, _ = name[len(TMP_PREFIX) :].rsplit("-", 2)
        if host != socket.gethostname().replace("/", "_") or int(pid) == os.getpid():
            return False
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):  # not our name pattern, or someone else's live pid
        return False
    return False
