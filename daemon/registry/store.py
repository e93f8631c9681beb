"""The registry's object store: where model files live, one protocol, picked by location.

Objects are content-addressed (named by their sha256, ``<location>/sha256/<hex>.pt``) and
immutable. Publication is two steps so the registry can order them around its row commit:
``stage`` makes a complete, durable copy the registry can still drop (hashing as it copies),
``publish`` - called inside the config's write transaction - makes it visible under its digest
(a no-op when the same bytes are already stored). Every read is verified: ``fetch`` copies an
object to a local path, checking size and sha256 as it copies, and only a verified copy
appears at the destination.

Leftovers of dead writers (temp files) are swept by age: nothing here relies on file locks,
so a store may sit on a shared mount (NFS) used by several nodes.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from daemon.registry.records import RegistryError

OBJECT_STORES: dict[str, str] = {
    "file": "daemon.registry.stores.file:FileObjectStore",
    "s3": "daemon.registry.stores.s3:S3ObjectStore",
}
OBJECTS_PREFIX = "sha256"  # objects live under <location>/sha256/
DEFAULT_TEMP_GRACE = 3600.0


@dataclass
class Staged:
    """A staged object: ``path`` is the file store's temp copy; ``source`` the file an S3 store
    re-reads if the object vanished before publication; ``created`` says this stage stored it."""

    digest: str
    size: int
    path: Path | None = None
    source: Path | None = None
    created: bool = False


class ObjectStore(Protocol):
    location: str

    def open(self) -> None: ...
    def locate(self, digest: str) -> str: ...
    def stage(self, src: Path) -> Staged: ...
    def publish(self, staged: Staged) -> bool: ...
    def release(self, staged: Staged) -> None: ...
    def remove(self, digest: str) -> None: ...
    def objects(self) -> Iterator[tuple[str, float]]: ...
    def mtime(self, digest: str) -> float | None: ...
    def check(self, digest: str, size: int) -> str | None: ...
    def fetch(self, digest: str, size: int, dest: Path) -> None: ...
    def sweep_temp(self, older_than: float) -> list[str]: ...


def open_object_store(location: str) -> ObjectStore:
    """The store for ``location``: a filesystem path, or ``scheme://...`` from :data:`OBJECT_STORES`."""
    scheme = urlsplit(location).scheme if "://" in location else "file"
    target = OBJECT_STORES.get(scheme)
    if target is None:
        known = ", ".join(OBJECT_STORES)
        raise RegistryError(f"object store {location!r}: unsupported scheme {scheme!r} (expected {known})")
    if scheme == "file" and location.startswith("file://"):
        location = urlsplit(location).path
    module, _, attr = target.partition(":")
    store: ObjectStore = getattr(importlib.import_module(module), attr)(location)
    return store
