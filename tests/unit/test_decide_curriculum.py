"""Curriculum weights: every row of the design's weight table, metrics, bounds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.decide.curriculum import CurriculumConfig, CurriculumFeedback, elo_slope_per_hour
from daemon.decide.store import DecideStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
KEY = "square8_2p"


@pytest.fixture
def cf(tmp_path: Path) -> Iterator[CurriculumFeedback]:
    with CurriculumFeedback(tmp_path / "decide.db") as feedback:
        yield feedback


def _games(
    cf: CurriculumFeedback, wins: int, losses: int, draws: int = 0, elo: list[float] | None = None
) -> None:
    results = [1] * wins + [-1] * losses + [0] * draws
    for i, w in enumerate(results):
        e = elo[i] if elo is not None else 1500.0
        cf.record_game(KEY, w, e, now=T0 - timedelta(minutes=len(results) - i))


# (name, wins, losses, models, elo slope per game (1 min apart), hours since training, expected weight)
WEIGHT_TABLE = [
    ("neutral", 6, 4, 1, 0.0, 1.0, 1.0),  # 60%: no rule applies
    ("low win rate < 55% (+0.4)", 5, 5, 1, 0.0, 1.0, 1.4),
    ("no trained model (+0.5)", 6, 4, 0, 0.0, None, 1.5),
    ("elo regression (+0.2)", 6, 4, 1, -1.0, 1.0, 1.2),  # -60 Elo/h < -10
    ("win rate > 70% (-0.3)", 8, 2, 1, 0.0, 1.0, 0.7),
    ("last training > 6 h ago (+0.1)", 6, 4, 1, 0.0, 7.0, 1.1),
    ("low + bootstrap + regression", 2, 8, 0, -1.0, None, 2.0),  # 1 + .4 + .5 + .2 = 2.1 -> 2.0
    ("high + training fresh: 0.7 stays >= 0.5", 10, 0, 1, 0.0, 0.5, 0.7),
    ("low + stale training + regression", 4, 6, 1, -2.0, 8.0, 1.7),
    ("exactly 55% is not low", 11, 9, 1, 0.0, 1.0, 1.0),
    ("exactly 70% is not high", 7, 3, 1, 0.0, 1.0, 1.0),
    ("exactly 6 h is not stale", 6, 4, 1, 0.0, 6.0, 1.0),
]


@pytest.mark.parametrize(("name", "wins", "losses", "models", "slope", "trained_h", "expected"), WEIGHT_TABLE)
def test_weight_table(
    cf: CurriculumFeedback,
    name: str,
    wins: int,
    losses: int,
    models: int,
    slope: float,
    trained_h: float | None,
    expected: float,
) -> None:
    n = wins + losses
    _games(cf, wins, losses, elo=[1500.0 + slope * i for i in range(n)])
    if trained_h is not None:
        cf.record_training(KEY, now=T0 - timedelta(hours=trained_h), model_count=models)
    elif models:
        cf.set_model_count(KEY, models)
    assert cf.get_curriculum_weights(now=T0)[KEY] == pytest.approx(expected), name


def test_clamped_low_bound() -> None:
    cfg = CurriculumConfig(high_win_rate_penalty=0.9)
    assert cfg.min_weight == 0.5


def test_clamp_to_min(tmp_path: Path) -> None:
    with CurriculumFeedback(tmp_path / "d.db", CurriculumConfig(high_win_rate_penalty=0.9)) as cf:
        _games(cf, 10, 0)
        cf.record_training(KEY, now=T0, model_count=1)
        assert cf.get_weight(KEY, now=T0) == 0.5


def test_every_factor_configurable(tmp_path: Path) -> None:
    cfg = CurriculumConfig(low_win_rate=0.65, low_win_rate_boost=0.25, min_games=2)
    with CurriculumFeedback(tmp_path / "d.db", cfg) as cf:
        _games(cf, 3, 2)  # 60% < 65%
        cf.record_training(KEY, now=T0, model_count=1)
        assert cf.get_weight(KEY, now=T0) == pytest.approx(1.25)
        assert [n for n, _ in cf.weight_factors(KEY, now=T0)] == ["low_win_rate"]


def test_metrics_window_and_draws(cf: CurriculumFeedback) -> None:
    cf.record_game(KEY, 1, 1500, now=T0 - timedelta(hours=2))  # outside the 30 min window
    for w in (1, 1, 0, -1, -1):
        cf.record_game(KEY, w, None, now=T0 - timedelta(minutes=5))
    cf.record_game(KEY, 1, None, now=T0 + timedelta(minutes=1))  # in the future of `now`: not counted
    m = cf.get_config_metrics(KEY, now=T0)
    assert (m.games_recent, m.wins, m.draws, m.losses) == (5, 2, 1, 2)
    assert m.win_rate == pytest.approx(0.5)
    assert m.elo_trend == 0.0 and m.current_elo is None
    assert m.model_count == 0 and m.last_training_time is None


def test_too_few_games_small_sample_win_rate(cf: CurriculumFeedback) -> None:
    # DESIGN 10: a number whenever a game was recorded, the count beside it; below min_games
    # it is not evidence: no win-rate rule applies and the decisions see it as unknown.
    for _ in range(4):
        cf.record_game(KEY, -1, 1500, now=T0)
    m = cf.get_config_metrics(KEY, now=T0)
    assert m.games_recent == 4 and m.win_rate == 0.0
    assert m.win_rate_reliable is False and m.known_win_rate is None
    assert cf.get_weight(KEY, now=T0) == 1.5  # bootstrap only, no win-rate rule
    cf.record_game(KEY, -1, 1500, now=T0)  # the fifth (min_games): now it counts
    m = cf.get_config_metrics(KEY, now=T0)
    assert m.win_rate_reliable is True and m.known_win_rate == 0.0
    assert cf.get_weight(KEY, now=T0) == 1.9  # + low win rate


def test_no_game_no_win_rate(cf: CurriculumFeedback) -> None:
    m = cf.get_config_metrics(KEY, now=T0)
    assert m.games_recent == 0 and m.win_rate is None and m.known_win_rate is None


def test_elo_trend_is_least_squares_per_hour() -> None:
    import numpy as np

    t = np.array([0.0, 600.0, 1200.0, 1800.0])
    e = np.array([1500.0, 1490.0, 1485.0, 1470.0])
    expected = float(np.polyfit(t / 3600.0, e, 1)[0])
    assert elo_slope_per_hour(t, e) == pytest.approx(expected)
    assert elo_slope_per_hour(t[:1], e[:1]) == 0.0
    assert elo_slope_per_hour(np.array([5.0, 5.0]), np.array([1.0, 2.0])) == 0.0


def test_history_bounded(tmp_path: Path) -> None:
    cfg = CurriculumConfig(history_limit=10)
    with CurriculumFeedback(tmp_path / "d.db", cfg) as cf:
        for i in range(25):
            cf.record_game(KEY, 1, 1500, now=T0 + timedelta(seconds=i))
        assert len(cf.store.results(KEY)) == 10
        assert cf.get_config_metrics(KEY, now=T0 + timedelta(minutes=1)).games_recent == 10


def test_record_training_counts(cf: CurriculumFeedback) -> None:
    cf.record_training(KEY, now=T0)
    cf.record_training(KEY, now=T0 + timedelta(hours=1))
    m = cf.get_config_metrics(KEY, now=T0)
    assert m.model_count == 2 and m.last_training_time == T0 + timedelta(hours=1)


def test_bad_input(cf: CurriculumFeedback) -> None:
    with pytest.raises(ValueError, match="winner"):
        cf.record_game(KEY, 2, 1500, now=T0)
    with pytest.raises(ValueError, match="config"):
        cf.record_game("chess_2p", 1, 1500, now=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        cf.get_curriculum_weights(now=datetime(2025, 1, 1))


def test_shared_store_object(tmp_path: Path) -> None:
    with DecideStore(tmp_path / "d.db") as store:
        cf = CurriculumFeedback(store).open()
        cf.record_game(KEY, 1, 1500, now=T0)
        cf.close()  # does not close a store it does not own
        assert store.results(KEY)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    results=st.lists(
        st.tuples(st.sampled_from([1, 0, -1]), st.floats(0, 3000), st.integers(0, 7200)), max_size=40
    ),
    models=st.integers(0, 3),
    trained=st.one_of(st.none(), st.integers(0, 48 * 3600)),
    offset=st.integers(-3600, 3600),
)
def test_weights_always_within_bounds(
    tmp_path_factory: pytest.TempPathFactory,
    results: list[tuple[int, float, int]],
    models: int,
    trained: int | None,
    offset: int,
) -> None:
    path = tmp_path_factory.mktemp("w") / "d.db"
    with CurriculumFeedback(path) as cf:
        for w, elo, dt in results:
            cf.record_game(KEY, w, elo, now=T0 - timedelta(seconds=dt))
        if trained is not None:
            cf.record_training(KEY, now=T0 - timedelta(seconds=trained), model_count=models)
        weights = cf.get_curriculum_weights(now=T0 + timedelta(seconds=offset))
        assert len(weights) == 12
        assert all(0.5 <= w <= 2.0 for w in weights.values())
