"""Synthetic evaluation games: both models seated by name, rankings drawn with a known Elo gap."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from daemon.data.gamedb import GameDB
from daemon.selfplay_sim import write_evaluation_games


@pytest.mark.parametrize("key", ["square8_2p", "hex8_3p", "square8_4p"])
@pytest.mark.parametrize("elo", [-150.0, 0.0, 200.0])
def test_pairwise_rate_follows_the_elo_gap(tmp_path: Path, key: str, elo: float) -> None:
    db = tmp_path / "eval.db"
    n = 1200
    ahead = write_evaluation_games(db, key, n, candidate="m-v2", production="m-v1", elo_diff=elo, seed=3)
    games = list(GameDB(db).iter_games(key, newest_first=False, sources=("evaluation",)))
    assert len(games) == n
    read_ahead = 0
    for g in games:
        seats = {p.profile_id: p.seat for p in g.players}
        assert {"m-v1", "m-v2"} <= set(seats), seats
        assert g.ranking is not None and g.winner == g.ranking[0]
        read_ahead += g.ranking.index(seats["m-v2"]) < g.ranking.index(seats["m-v1"])
    assert read_ahead == ahead  # the ranking the reader sees is the one drawn
    expected = 1 / (1 + 10 ** (-elo / 400))
    margin = 4 * math.sqrt(expected * (1 - expected) / n)  # 4 standard errors
    assert abs(ahead / n - expected) < margin, (ahead / n, expected)
