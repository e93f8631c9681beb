"""What a refresh of one game database reports: per-config counts, skip reasons, signatures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.data.games import USABLE_STATUSES
from daemon.keys import PLAYER_COUNTS, make_config_key

PENDING_STATUSES = frozenset({"active", "in_progress", "paused", "waiting"})


@dataclass
class SkipCounts:
    orphan: int = 0
    active: int = 0
    abandoned: int = 0
    no_winner: int = 0
    other: int = 0

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("orphan", "active", "abandoned", "no_winner", "other")}


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


_KEY_CACHE: dict[tuple[str, int], str | None] = {}


def config_of(board: Any, players: Any) -> str | None:
    try:
        if not isinstance(board, str) or int(players) not in PLAYER_COUNTS:
            return None
        n = int(players)
    except (ValueError, TypeError):
        return None
    # Memoised: this runs for every new row, and there are only a few distinct values.
    ck = (board, n)
    if ck not in _KEY_CACHE:
        try:
            _KEY_CACHE[ck] = make_config_key(board, n) if len(_KEY_CACHE) < 4096 else None
        except ValueError:
            _KEY_CACHE[ck] = None
    return _KEY_CACHE[ck]


def classify(status: Any, winner: Any) -> str:
    s = str(status).lower() if status is not None else ""
    if s in USABLE_STATUSES:
        return "usable" if winner is not None else "no_winner"
    if s in PENDING_STATUSES:
        return "active"
    if s == "abandoned":
        return "abandoned"
    return "other"
