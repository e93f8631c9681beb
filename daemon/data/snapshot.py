"""What a refresh of one game database reports: per-config counts, skip reasons, signatures."""

from __future__ import annotations

from dataclasses import dataclass

# Re-exported: the row rule lives in usable.py (shared by the poll and the export).
from daemon.data.usable import PENDING_STATUSES, classify, config_of

__all__ = ["PENDING_STATUSES", "ConfigSnapshot", "SkipCounts", "SourceSnapshot", "classify", "config_of"]


@dataclass
class SkipCounts:
    """Rows of a config that are not usable, by reason (:func:`daemon.data.usable.classify`)."""

    orphan: int = 0
    active: int = 0
    abandoned: int = 0
    no_winner: int = 0
    other: int = 0
    undecodable: int = 0  # a status that is not UTF-8
    bad_winner: int = 0  # a winner that is not an integer

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in _SKIP_FIELDS}


_SKIP_FIELDS = ("orphan", "active", "abandoned", "no_winner", "other", "undecodable", "bad_winner")


@dataclass(frozen=True)
class ConfigSnapshot:
    config_key: str
    usable_games: int
    # Highest games.rowid holding a row of this config (any status).
    watermark: int
    # Usable games gained since the previous refresh (negative if the file shrank).
    new_games: int
    skipped: SkipCounts
    # Changes exactly when this config's rows change: for the export cache.
    signature: str


@dataclass(frozen=True)
class SourceSnapshot:
    path: str
    ok: bool
    error: str | None
    schema_version: int | None
    identity: tuple[int, int] | None
    max_rowid: int
    status_updates: int
    replaced: bool
    changed: bool
    configs: dict[str, ConfigSnapshot]
    orphans: tuple[str, ...]
    error_kind: str | None = None
    # Readable, but worth telling (e.g. a schema version newer than this reader knows).
    warnings: tuple[str, ...] = ()

    @classmethod
    def failed(cls, path: str, error: str, kind: str, schema_version: int | None) -> SourceSnapshot:
        """The snapshot of a source that could not be read: contributes nothing."""
        return cls(
            path=path,
            ok=False,
            error=error,
            error_kind=kind,
            schema_version=schema_version,
            identity=None,
            max_rowid=0,
            status_updates=0,
            replaced=False,
            changed=True,
            configs={},
            orphans=(),
        )
