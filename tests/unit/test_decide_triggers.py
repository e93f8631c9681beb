"""Training triggers: the decision rule, exact reasons, bounds and purity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.decide.triggers import SIGNALS, TrainingTriggers, TriggerConfig
from daemon.settings import TriggerSettings

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
KEY = "hex8_3p"


def _triggers(**state: Any) -> TrainingTriggers:
    t = TrainingTriggers(TriggerConfig())
    t.update_config_state(KEY, **state)
    return t


def _ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


CASES = [
    (
        "fresh data only",
        {
            "games_count": 5000,
            "new_games": 612,
            "win_rate": 0.6,
            "model_count": 2,
            "last_training_time": _ago(1),
        },
        True,
        "train: 612 new games >= 500",
        "data_freshness",
    ),
    (
        "stale with some data",
        {
            "games_count": 5000,
            "new_games": 180,
            "win_rate": 0.6,
            "model_count": 2,
            "last_training_time": _ago(7.2),
        },
        True,
        "train: model 7.2 h old >= 6.0 h with 180 new games >= 150",
        "model_staleness",
    ),
    (
        "stale without enough data",
        {
            "games_count": 5000,
            "new_games": 100,
            "win_rate": 0.6,
            "model_count": 2,
            "last_training_time": _ago(7.2),
        },
        False,
        "100 new games < 500; model 7.2 h old >= 6.0 h but 100 new games < 150; win rate 0.60 >= 0.45",
        None,
    ),
    (
        "regression",
        {
            "games_count": 5000,
            "new_games": 10,
            "win_rate": 0.2,
            "model_count": 2,
            "last_training_time": _ago(1),
        },
        True,
        "train: win rate 0.20 < 0.45 (regression 0.56 >= 0.50)",
        "performance_regression",
    ),
    (
        "mild regression is not enough",
        {
            "games_count": 5000,
            "new_games": 10,
            "win_rate": 0.4,
            "model_count": 2,
            "last_training_time": _ago(1),
        },
        False,
        "10 new games < 500; model 1.0 h old < 6.0 h; win rate 0.40 < 0.45 but regression 0.11 < 0.50",
        None,
    ),
    (
        "bootstrap",
        {"games_count": 150, "new_games": 150, "win_rate": None, "model_count": 0},
        True,
        "train: bootstrap: no model yet and 150 usable games >= 100",
        "bootstrap",
    ),
    (
        "bootstrap not yet",
        {"games_count": 40, "new_games": 40, "model_count": 0},
        False,
        "40 new games < 500; no model yet and 40 usable games < 100 to bootstrap; win rate unknown",
        None,
    ),
    (
        "min interval",
        {
            "games_count": 5000,
            "new_games": 900,
            "win_rate": 0.6,
            "model_count": 2,
            "last_training_time": _ago(3),
            "last_run_time": NOW - timedelta(minutes=12),
        },
        False,
        "900 new games >= 500, but last run 12.0 min ago, 18.0 min left of the 30.0 min minimum interval",
        "data_freshness",
    ),
    (
        "nothing",
        {
            "games_count": 5000,
            "new_games": 412,
            "win_rate": 0.52,
            "model_count": 1,
            "last_training_time": _ago(2.1),
        },
        False,
        "412 new games < 500; model 2.1 h old < 6.0 h; win rate 0.52 >= 0.45",
        None,
    ),
    (
        "models but unknown age",
        {"games_count": 5000, "new_games": 20, "win_rate": 0.5, "model_count": 3, "last_training_time": None},
        False,
        "20 new games < 500; model age unknown; win rate 0.50 >= 0.45",
        None,
    ),
]


@pytest.mark.parametrize(("name", "state", "should", "reason", "deciding"), CASES, ids=[c[0] for c in CASES])
def test_decision_cases(
    name: str, state: dict[str, Any], should: bool, reason: str, deciding: str | None
) -> None:
    d = _triggers(**state).should_train(KEY, now=NOW)
    assert (d.should_train, d.reason, d.deciding_signal) == (should, reason, deciding)
    assert set(d.signal_scores) == set(SIGNALS)


def test_scores_and_priority() -> None:
    t = _triggers(
        games_count=5000,
        new_games=250,
        win_rate=0.3,
        model_count=1,
        last_training_time=_ago(3),
        curriculum_weight=1.5,
    )
    d = t.should_train(KEY, now=NOW)
    assert d.signal_scores == pytest.approx(
        {"data_freshness": 0.5, "model_staleness": 0.5, "performance_regression": 0.15 / 0.45}
    )
    assert d.priority == pytest.approx((0.4 * 0.5 + 0.3 * 0.5 + 0.3 * 0.15 / 0.45) * 1.5)


def test_no_model_is_not_fully_stale() -> None:
    d = _triggers(games_count=10, new_games=10, model_count=0).should_train(KEY, now=NOW)
    assert d.signal_scores["model_staleness"] == 0.0


def test_unknown_key_is_defaults_and_invalid_key_raises() -> None:
    t = TrainingTriggers()
    assert not t.should_train("square8_2p", now=NOW).should_train
    with pytest.raises(ValueError):
        t.should_train("square8_5p", now=NOW)
    with pytest.raises(ValueError, match="win_rate"):
        t.update_config_state("square8_2p", win_rate=1.5)


def test_partial_update_keeps_other_fields() -> None:
    t = _triggers(games_count=10, new_games=3, model_count=2)
    s = t.update_config_state(KEY, new_games=7)
    assert (s.games_count, s.new_games, s.model_count) == (10, 7, 2)


def test_queue_ranked_by_priority() -> None:
    t = TrainingTriggers()
    t.update_config_state(
        "square8_2p", games_count=900, new_games=600, model_count=1, last_training_time=_ago(1)
    )
    t.update_config_state(
        "hex8_2p",
        games_count=900,
        new_games=600,
        model_count=1,
        last_training_time=_ago(1),
        curriculum_weight=2.0,
    )
    t.update_config_state(
        "square19_2p", games_count=9, new_games=9, model_count=1, last_training_time=_ago(1)
    )
    assert [d.config_key for d in t.get_training_queue(now=NOW)] == ["hex8_2p", "square8_2p"]


def test_from_settings() -> None:
    cfg = TriggerConfig(freshness_threshold=50, min_interval=60)
    assert TriggerConfig is TriggerSettings  # one definition of every knob and its default
    assert (cfg.freshness_threshold, cfg.min_interval, cfg.staleness_hours) == (50, 60, 6.0)


state_st = st.fixed_dictionaries(
    {
        "games_count": st.integers(0, 10**6),
        "new_games": st.integers(0, 10**5),
        "win_rate": st.one_of(st.none(), st.floats(0, 1)),
        "model_count": st.integers(0, 5),
        "last_training_time": st.one_of(
            st.none(), st.integers(-(10**6), 10**6).map(lambda s: NOW - timedelta(seconds=s))
        ),
        "last_run_time": st.one_of(
            st.none(), st.integers(-(10**5), 10**5).map(lambda s: NOW - timedelta(seconds=s))
        ),
        "curriculum_weight": st.floats(0.5, 2.0),
    }
)


@settings(max_examples=200, deadline=None)
@given(state=state_st, reads=st.integers(1, 5))
def test_scores_bounded_and_reads_invariant(state: dict[str, Any], reads: int) -> None:
    t = _triggers(**state)
    before = t.get_state(KEY)
    first = t.should_train(KEY, now=NOW)
    for _ in range(reads):
        assert t.should_train(KEY, now=NOW) == first
        t.get_training_queue(now=NOW)
        t.signal_scores(KEY, now=NOW)
    assert t.get_state(KEY) == before
    assert all(0.0 <= v <= 1.0 for v in first.signal_scores.values())
    assert first.priority >= 0.0
    assert first.reason and "\n" not in first.reason
