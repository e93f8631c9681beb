"""Verified, atomic local copies: temp name beside the destination, sha256 and size checked while
copying, fsync, rename, directory fsync. A mismatch leaves the destination untouched."""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from daemon.registry.records import ObjectDamaged

CHUNK = 8 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(prefix: str, suffix: str = "") -> str:
    """Unique across nodes sharing a directory: host, pid and a random part."""
    host = socket.gethostname().replace("/", "_") or "host"
    return f"{prefix}{host}-{os.getpid()}-{uuid.uuid4().hex}{suffix}"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_verified(chunks: Iterable[bytes], digest: str, size: int, dest: Path, location: str) -> None:
    """Write ``chunks`` to ``dest`` only if they are exactly ``size`` bytes hashing to ``digest``.

    Raises :class:`ObjectDamaged` (``size_mismatch`` / ``digest_mismatch``) naming ``location``.
    The hash runs on a helper thread (hashlib releases the GIL) while the next chunk is written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / temp_name(f".{dest.name}.tmp-")
    h = hashlib.sha256()
    n = 0
    problem: str | None = None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="registry-hash") as pool:
            pending: Future[None] | None = None
            for chunk in chunks:
                n += len(chunk)
                if n > size:
                    problem = "size_mismatch"
                    break
                if pending is not None:
                    pending.result()
                pending = pool.submit(h.update, chunk)
                _write_all(fd, chunk)
            if pending is not None:
                pending.result()
        if problem is None and n != size:
            problem = "size_mismatch"
        if problem is None and h.hexdigest() != digest:
            problem = "digest_mismatch"
        if problem is None:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    if problem is not None:
        tmp.unlink(missing_ok=True)
        raise ObjectDamaged(location, problem)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
