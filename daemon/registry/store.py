"""The registry's object store: where model files live, one protocol, picked by location.

Objects are content-addressed (named by their sha256) and immutable. Publication is two
steps so the registry can order them around its row commit: ``stage`` makes a complete,
durable copy under a temporary name (hashing as it copies), ``publish`` makes it visible
under its digest (a no-op when the same bytes are already stored).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

OBJECT_STORES: dict[str, str] = {
    "file": "daemon.registry.stores.file:FileObjectStore",
}


@dataclass
class Staged:
    """A fully written, durable temporary copy; ``fd`` holds the file store's writer lock."""

    path: Path
    fd: int
    digest: str
    size: int


class ObjectStore(Protocol):
    def open(self) -> None: ...
    def locate(self, digest: str) -> str: ...
    def stage(self, src: Path) -> Staged: ...
    def publish(self, staged: Staged) -> bool: ...
    def release(self, staged: Staged) -> None: ...
    def remove(self, digest: str) -> None: ...
    def objects(self) -> Iterator[tuple[str, float]]: ...
    def check(self, digest: str, size: int) -> str | None: ...
    def sweep_temp(self) -> list[str]: ...


def open_object_store(location: str) -> ObjectStore:
    """The store for ``location``: a filesystem path, or ``scheme://...`` from :data:`OBJECT_STORES`."""
    scheme = urlsplit(location).scheme if "://" in location else "file"
    target = OBJECT_STORES.get(scheme)
    if target is None:
        known = ", ".join(OBJECT_STORES)
        raise ValueError(f"object store {location!r}: unsupported scheme {scheme!r} (expected {known})")
    if scheme == "file" and location.startswith("file://"):
        location = urlsplit(location).path
    module, _, attr = target.partition(":")
    store: ObjectStore = getattr(importlib.import_module(module), attr)(location)
    return store
