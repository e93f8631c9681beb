"""Dynamic export settings: a data tier from the usable-game count (DESIGN section 4).

| tier   | usable games      | max_games | sample_every | epochs | batch_size |
| ------ | ----------------- | --------- | ------------ | ------ | ---------- |
| small  | < 10,000          | all       | 1            | 100    | 128        |
| medium | 10,000 - 49,999   | 50,000    | 1            | 75     | 256        |
| large  | 50,000 - 200,000  | 100,000   | 2            | 50     | 512        |
| xlarge | > 200,000         | 150,000   | 3            | 30     | 1024       |

Only **usable** games count (completed/finished with a winner; orphans,
unfinished games and draws do not). The estimate is::

    estimated_samples = round(min(games, max_games) * moves_per_game * sample_factor / sample_every)

with the board's typical moves per game and sample factor (square8 60/1.0,
square19 200/1.5, hexagonal 80/1.2, hex8 40/0.8): the factor scales the
estimate (upstream computed it and then ignored it).

An unreadable database raises :class:`daemon.data.gamedb.GameDBError` naming the
file: a broken source must never look like a "small" data set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from daemon.data.gamedb import GameDB, SourceSnapshot
from daemon.keys import geometry, make_config_key, normalize_board


@dataclass(frozen=True)
class Tier:
    name: str
    min_games: int  # inclusive lower bound of usable games
    max_games: int | None  # None = every usable game
    sample_every: int
    epochs: int
    batch_size: int


# Ordered; the last tier whose min_games <= count wins. "large" is 50K..200K inclusive.
TIERS: tuple[Tier, ...] = (
    Tier("small", 0, None, 1, 100, 128),
    Tier("medium", 10_000, 50_000, 1, 75, 256),
    Tier("large", 50_000, 100_000, 2, 50, 512),
    Tier("xlarge", 200_001, 150_000, 3, 30, 1024),
)


@dataclass(frozen=True)
class ExportSettings:
    data_tier: str
    max_games: int | None
    sample_every: int
    epochs: int
    batch_size: int
    estimated_samples: int
    usable_games: int = 0
    board_type: str = ""
    num_players: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tier_for(usable_games: int) -> Tier:
    if usable_games < 0:
        raise ValueError(f"usable_games must be >= 0 (got {usable_games})")
    chosen = TIERS[0]
    for tier in TIERS:
        if usable_games >= tier.min_games:
            chosen = tier
    return chosen


def estimate_samples(board: str, usable_games: int, max_games: int | None, sample_every: int) -> int:
    geo = geometry(board)
    games = usable_games if max_games is None else min(usable_games, max_games)
    return round(games * geo.moves_per_game * geo.sample_factor / sample_every)


def settings_for_count(board: str, num_players: int, usable_games: int) -> ExportSettings:
    """Pure: the export settings for ``usable_games`` usable games of ``board``/``num_players``."""
    canonical = normalize_board(board)
    make_config_key(canonical, num_players)  # validates the player count
    tier = tier_for(usable_games)
    return ExportSettings(
        data_tier=tier.name,
        max_games=tier.max_games,
        sample_every=tier.sample_every,
        epochs=tier.epochs,
        batch_size=tier.batch_size,
        estimated_samples=estimate_samples(canonical, usable_games, tier.max_games, tier.sample_every),
        usable_games=usable_games,
        board_type=canonical,
        num_players=num_players,
    )


def usable_from_snapshots(snapshots: Iterable[SourceSnapshot], config_key: str) -> int:
    """Sum of usable games of ``config_key``; a snapshot that is not ok is an error, never 0."""
    total = 0
    for snap in snapshots:
        if not snap.ok:
            raise SourceUnreadable(snap.path, snap.error or "unreadable")
        cs = snap.configs.get(config_key)
        total += cs.usable_games if cs is not None else 0
    return total


class SourceUnreadable(Exception):
    """A game database snapshot that could not be read (names the file)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def take_snapshots(db_paths: Sequence[Path]) -> dict[str, SourceSnapshot]:
    """Open, refresh and close each database; raises ``GameDBError`` for an unreadable one."""
    out: dict[str, SourceSnapshot] = {}
    for path in db_paths:
        db = GameDB(Path(path))
        try:
            out[str(db.path)] = db.refresh()
        finally:
            db.close()
    return out


def get_export_settings(
    db_paths: Sequence[Path],
    board_type: str,
    num_players: int,
    *,
    snapshots: Mapping[str, SourceSnapshot] | None = None,
) -> ExportSettings:
    """Export settings from the usable-game count of ``db_paths`` (or given ``snapshots``).

    Raises ``GameDBError`` / :class:`SourceUnreadable` when a database cannot be read.
    """
    key = make_config_key(board_type, num_players)
    snaps = snapshots if snapshots is not None else take_snapshots(db_paths)
    return settings_for_count(board_type, num_players, usable_from_snapshots(snaps.values(), key))
