"""Dynamic export settings: the tier table, board factors, unreadable sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.data.gamedb import GameDBError
from daemon.export.tiers import get_export_settings, settings_for_count


@pytest.mark.parametrize(
    ("games", "tier", "max_games", "every", "epochs", "batch"),
    [
        (0, "small", None, 1, 100, 128),
        (9_999, "small", None, 1, 100, 128),
        (10_000, "medium", 50_000, 1, 75, 256),
        (49_999, "medium", 50_000, 1, 75, 256),
        (50_000, "large", 100_000, 2, 50, 512),
        (200_000, "large", 100_000, 2, 50, 512),
        (200_001, "xlarge", 150_000, 3, 30, 1024),
    ],
)
def test_tier_table(
    games: int, tier: str, max_games: int | None, every: int, epochs: int, batch: int
) -> None:
    s = settings_for_count("square8", 2, games)
    assert (s.data_tier, s.max_games, s.sample_every, s.epochs, s.batch_size) == (
        tier,
        max_games,
        every,
        epochs,
        batch,
    )


def test_board_factor_changes_the_estimate() -> None:
    assert settings_for_count("square8", 2, 1000).estimated_samples == 60_000
    assert settings_for_count("square19", 2, 1000).estimated_samples == 300_000  # 200 moves x 1.5
    assert settings_for_count("hexagonal", 2, 1000).estimated_samples == 96_000  # 80 x 1.2
    assert settings_for_count("hex8", 2, 1000).estimated_samples == 32_000  # 40 x 0.8
    # capped by max_games and divided by sample_every
    assert settings_for_count("square8", 2, 300_000).estimated_samples == 150_000 * 60 // 3


def test_unreadable_db_is_an_error_not_a_small_tier(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GameDBError, match=r"junk\.db"):
        get_export_settings([junk], "square8", 2)
    with pytest.raises(GameDBError, match=r"missing\.db"):
        get_export_settings([tmp_path / "missing.db"], "square8", 2)


def test_counts_usable_games_only(real_db: Path) -> None:
    s = get_export_settings([real_db], "square8", 3)
    assert s.usable_games == 5 and s.data_tier == "small" and s.estimated_samples == 300
