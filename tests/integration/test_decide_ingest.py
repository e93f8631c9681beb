"""Ingest evaluation games read by the real GameDB reader; each game once."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from daemon.data.gamedb import GameDB
from daemon.decide.curriculum import CurriculumFeedback
from daemon.decide.ingest import SeatMapping, ingest_evaluation_games, model_seat
from daemon.selfplay_sim import write_evaluation_games, write_games

KEY = "square8_2p"


def _label(db: Path) -> None:
    """Make half the games evaluation games of model-A on seat 1 (as writers would)."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            ids = [r[0] for r in conn.execute("SELECT game_id FROM games ORDER BY rowid")]
            chosen = ids[::2]
            conn.executemany(
                "UPDATE game_players SET ai_profile_id='model-A' WHERE game_id=? AND player_number=1",
                [(g,) for g in chosen],
            )
    finally:
        conn.close()


def test_ingest_from_real_gamedb(tmp_path: Path) -> None:
    db = tmp_path / "games.db"
    write_games(db, KEY, 40, seed=3, source="gauntlet")
    _label(db)
    gdb = GameDB(db)
    gdb.open()
    try:
        gdb.refresh()
        games = list(gdb.iter_games(KEY))
    finally:
        gdb.close()
    now = datetime.now(UTC) + timedelta(minutes=1)
    expected = [g for g in games if model_seat(g, "model-A", SeatMapping()) == 1]
    assert 0 < len(expected) < len(games)
    with CurriculumFeedback(tmp_path / "decide.db") as cf:
        rep = ingest_evaluation_games(cf, KEY, games, "model-A", now=now)
        assert rep.ingested == len(expected)
        assert rep.unidentified == len(games) - len(expected)
        wins = sum(1 for g in expected if g.winner == 1)
        m = cf.get_config_metrics(KEY, now=now)
        assert (m.games_recent, m.wins) == (len(expected), wins)
        again = ingest_evaluation_games(cf, KEY, games, "model-A", now=now)
        assert again.ingested == 0 and again.duplicate == len(expected)
    with CurriculumFeedback(tmp_path / "decide.db") as cf:  # once, even after a restart
        assert ingest_evaluation_games(cf, KEY, games, "model-A", now=now).ingested == 0
        assert cf.get_config_metrics(KEY, now=now).games_recent == len(expected)


def test_sources_metadata_mapping_and_age(tmp_path: Path) -> None:
    now = datetime(2025, 3, 1, 12, tzinfo=UTC)

    def game(
        gid: str, source: str, winner: int, meta: dict[str, object], minutes: int = 1
    ) -> SimpleNamespace:
        return SimpleNamespace(
            game_id=gid,
            source=source,
            winner=winner,
            metadata=meta,
            players=[],
            extra={},
            created_at=(now - timedelta(minutes=minutes)).isoformat(),
        )

    games = [
        game("a", "tournament", 2, {"model_id": "m1", "model_seat": 2, "model_elo": 1510}),
        game("b", "evaluation", 1, {"model_id": "m1", "model_seat": 2, "model_elo": 1490}),
        game("c", "selfplay", 1, {"model_id": "m1", "model_seat": 1}),
        game("d", "gauntlet", 1, {"opponent_model_id": "m1", "opponent_seat": 1}),
        game("e", "gauntlet", 1, {"model_id": "m2", "model_seat": 1}),
        game("f", "gauntlet", 1, {"model_id": "m1", "model_seat": 1}, minutes=90),
    ]
    with CurriculumFeedback(tmp_path / "d.db") as cf:
        rep = ingest_evaluation_games(cf, KEY, games, "m1", now=now)
        assert rep.as_dict() == {
            "config": KEY,
            "ingested": 3,
            "duplicate": 0,
            "wrong_source": 1,
            "unidentified": 1,
            "too_old": 1,
            "head_to_head": 0,
        }
        m = cf.get_config_metrics(KEY, now=now)
        assert (m.wins, m.losses, m.current_elo) == (2, 1, 1490.0)
        only_tournament = ingest_evaluation_games(
            cf,
            KEY,
            [game("g", "evaluation", 1, {"model_id": "m1", "model_seat": 1})],
            "m1",
            sources=("tournament",),
            now=now,
        )
        assert only_tournament.wrong_source == 1


def test_promotion_games_never_reach_the_win_rate(tmp_path: Path) -> None:
    # Production losing to a stronger candidate of its own config is the promotion test working:
    # those games must not raise a low-win-rate alert for the config (seen in the demo: 0.28).
    db = tmp_path / "games.db"
    write_evaluation_games(db, KEY, 60, candidate=f"{KEY}-v2", production=f"{KEY}-v1", elo_diff=300)
    gdb = GameDB(db)
    gdb.open()
    try:
        gdb.refresh()
        games = list(gdb.iter_games(KEY, sources=("evaluation",)))
    finally:
        gdb.close()
    assert len(games) == 60
    now = datetime.now(UTC) + timedelta(minutes=1)
    lineage = {f"{KEY}-v1", f"{KEY}-v2"}
    with CurriculumFeedback(tmp_path / "decide.db") as cf:
        rep = ingest_evaluation_games(cf, KEY, games, f"{KEY}-v1", lineage=lineage, now=now)
        assert (rep.ingested, rep.head_to_head) == (0, 60)
        assert cf.get_config_metrics(KEY, now=now).games_recent == 0
    with CurriculumFeedback(tmp_path / "other.db") as cf:  # against outsiders they count
        rep = ingest_evaluation_games(cf, KEY, games, f"{KEY}-v1", lineage={f"{KEY}-v1"}, now=now)
        assert rep.ingested == 60
