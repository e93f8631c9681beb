"""Curriculum feedback: per-config training weights from recent evaluation results.

Weights are a deterministic function of the recorded history (persisted in the
state store, bounded per config) and the ``now`` passed in. A copy of the
history is kept in memory (loaded by :meth:`CurriculumFeedback.open`, written
through on every record) so an evaluation never reads the database.

Weight (defaults; every number is a :class:`CurriculumConfig` field)::

    1.0
    + 0.4  win rate < 55%           (needs >= min_games results in the window)
    + 0.5  no trained model         (bootstrap)
    + 0.2  Elo regression           (elo_trend < -10 Elo/h, >= 3 rated results)
    - 0.3  win rate > 70%
    + 0.1  last training > 6 h ago  (only when a training time is known)
    clamped to [0.5, 2.0]

Win rate counts a draw as half a win. It is a number whenever the window holds any
result (``games_recent`` says how many); with fewer than ``min_games`` it is a
small-sample figure (``win_rate_reliable`` False, ``known_win_rate`` None): neither
win-rate rule applies and the triggers treat it as unknown. No result: ``None``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt
import structlog

from daemon.decide.clock import resolve_now, to_dt, ts
from daemon.decide.store import DecideStore
from daemon.keys import ALL_CONFIG_KEYS, validate_config_key
from daemon.settings import CurriculumSettings

log = structlog.get_logger(__name__)

_SCORE = {1: 1.0, 0: 0.5, -1: 0.0}


# The parameters are the ``curriculum:`` settings section itself: one name and one default per knob.
CurriculumConfig = CurriculumSettings


@dataclass(frozen=True)
class ConfigMetrics:
    config_key: str
    games_recent: int
    wins: int
    draws: int
    losses: int
    win_rate: float | None
    elo_trend: float
    current_elo: float | None
    model_count: int
    last_training_time: datetime | None
    # win_rate counts >= min_games results (below that it is a small-sample figure).
    win_rate_reliable: bool = False

    @property
    def known_win_rate(self) -> float | None:
        """The win rate the decisions use: None below ``min_games`` results."""
        return self.win_rate if self.win_rate_reliable else None


class _History:
    """One config's results sorted by time, with lazily built numpy views."""

    __slots__ = ("_arrays", "elo", "score", "t")

    def __init__(self) -> None:
        self.t: list[float] = []
        self.score: list[float] = []
        self.elo: list[float] = []
        self._arrays: tuple[npt.NDArray[np.float64], ...] | None = None

    def add(self, t: float, score: float, elo: float | None, limit: int) -> None:
        i = bisect.bisect_right(self.t, t)
        self.t.insert(i, t)
        self.score.insert(i, score)
        self.elo.insert(i, math.nan if elo is None else float(elo))
        if len(self.t) > limit:  # drop the oldest, as the store does
            drop = len(self.t) - limit
            del self.t[:drop], self.score[:drop], self.elo[:drop]
        self._arrays = None

    def arrays(self) -> tuple[npt.NDArray[np.float64], ...]:
        if self._arrays is None:
            t = np.asarray(self.t, dtype=np.float64)
            s = np.asarray(self.score, dtype=np.float64)
            e = np.asarray(self.elo, dtype=np.float64)
            self._arrays = (t, s, e)
        return self._arrays


def elo_slope_per_hour(t: npt.NDArray[np.float64], elo: npt.NDArray[np.float64]) -> float:
    """Least-squares slope of Elo over time (Elo per hour); 0 without two distinct times."""
    if t.size < 2:
        return 0.0
    h = (t - t[0]) / 3600.0
    dh = h - h.mean()
    den = float(np.dot(dh, dh))
    if den <= 0.0:
        return 0.0
    return float(np.dot(dh, elo - elo.mean()) / den)


class CurriculumFeedback:
    """Recorded results -> curriculum weights. Constructor stores; :meth:`open` loads."""

    def __init__(
        self,
        store_or_path: DecideStore | Path | str,
        config: CurriculumConfig | None = None,
        *,
        configs: Sequence[str] = ALL_CONFIG_KEYS,
        read_only: bool = False,
    ) -> None:
        self.config = config or CurriculumConfig()
        # The configs always listed (weights, metrics), also before anything was recorded.
        self.configs = tuple(validate_config_key(k) for k in configs)
        self.store, self._owns_store = DecideStore.given(store_or_path, read_only=read_only)
        self._hist: dict[str, _History] = {}
        self._training: dict[str, tuple[float | None, int | None]] = {}
        self._ingested: dict[str, set[str]] = {}

    @classmethod
    def from_settings(
        cls,
        path: Path | str,
        settings: CurriculumSettings,
        *,
        configs: Sequence[str] = ALL_CONFIG_KEYS,
        read_only: bool = False,
    ) -> CurriculumFeedback:
        return cls(path, settings, configs=configs, read_only=read_only)

    # -- lifecycle ------------------------------------------------------------
    def open(self) -> CurriculumFeedback:
        """Open the store (if owned) and load the history into memory."""
        if self._owns_store:
            self.store.open()
        self._hist = {}
        limit = self.config.history_limit
        for key, t, winner, elo in self.store.results():
            self._hist.setdefault(key, _History()).add(t, _SCORE.get(winner, 0.5), elo, limit)
        self._training = self.store.training()
        self._ingested = {}
        return self

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> CurriculumFeedback:
        return self.open()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- recording ------------------------------------------------------------
    def record_game(
        self, config_key: str, winner: int, model_elo: float | None, now: datetime | None = None
    ) -> None:
        """One evaluation result of the config's current model (winner: 1 won, -1 lost, 0 draw)."""
        self.record_games(config_key, [(winner, model_elo, now)])

    def record_games(
        self,
        config_key: str,
        results: Sequence[tuple[int, float | None, datetime | None]],
        game_ids: list[str] | None = None,
    ) -> None:
        """Several results of one config (and the game ids they came from) in one transaction."""
        key = validate_config_key(config_key)
        rows: list[tuple[float, int, float | None]] = []
        for winner, elo, when in results:
            if winner not in _SCORE:
                raise ValueError(f"{key}: winner must be 1 (won), -1 (lost) or 0 (draw), got {winner!r}")
            if elo is not None and not math.isfinite(elo):
                raise ValueError(f"{key}: model_elo must be finite, got {elo!r}")
            rows.append((ts(when), int(winner), None if elo is None else float(elo)))
        if not rows and not game_ids:
            return
        self.store.add_results(key, rows, self.config.history_limit, game_ids or (), self._ingest_limit)
        if game_ids:
            self.ingested_ids(key).update(game_ids)
            if len(self._ingested[key]) > self._ingest_limit:
                self._ingested[key] = self.store.ingested(key)
        hist = self._hist.setdefault(key, _History())
        for t, w, e in rows:
            hist.add(t, _SCORE[w], e, self.config.history_limit)

    def record_training(
        self, config_key: str, now: datetime | None = None, model_count: int | None = None
    ) -> None:
        """A model was trained for the config at ``now``; ``model_count`` defaults to previous + 1."""
        key = validate_config_key(config_key)
        if model_count is not None and model_count < 0:
            raise ValueError(f"{key}: model_count must be >= 0, got {model_count}")
        _, prev = self._training.get(key, (None, None))
        count = model_count if model_count is not None else (prev or 0) + 1
        t = ts(now)
        self.store.set_training(key, t, count)
        self._training[key] = (t, count)

    def set_model_count(self, config_key: str, model_count: int) -> None:
        """Tell the curriculum how many models exist (e.g. from the registry) without a training time."""
        key = validate_config_key(config_key)
        if model_count < 0:
            raise ValueError(f"{key}: model_count must be >= 0, got {model_count}")
        last, prev = self._training.get(key, (None, None))
        if prev != model_count:
            self.store.set_training(key, last, model_count)
            self._training[key] = (last, model_count)

    # -- reading (pure) -------------------------------------------------------
    def get_config_metrics(self, key: str, now: datetime | None = None) -> ConfigMetrics:
        key = validate_config_key(key)
        t_now = resolve_now(now).timestamp()
        wins = draws = losses = 0
        win_rate: float | None = None
        trend, current = 0.0, None
        hist = self._hist.get(key)
        if hist is not None and hist.t:
            t, s, e = hist.arrays()
            lo = int(np.searchsorted(t, t_now - self.config.window, side="left"))
            hi = int(np.searchsorted(t, t_now, side="right"))
            win = s[lo:hi]
            n = int(win.size)
            wins = int(np.count_nonzero(win == 1.0))
            draws = int(np.count_nonzero(win == 0.5))
            losses = n - wins - draws
            if n > 0:
                win_rate = float(win.sum()) / n
            rated = ~np.isnan(e[lo:hi])
            if rated.any():
                et, ee = t[lo:hi][rated], e[lo:hi][rated]
                current = float(ee[-1])
                if ee.size >= self.config.min_elo_points:
                    trend = elo_slope_per_hour(et, ee)
        last, count = self._training.get(key, (None, None))
        return ConfigMetrics(
            key,
            wins + draws + losses,
            wins,
            draws,
            losses,
            win_rate,
            trend,
            current,
            count or 0,
            to_dt(last),
            wins + draws + losses >= self.config.min_games,
        )

    def weight_factors(self, key: str, now: datetime | None = None) -> list[tuple[str, float]]:
        """The rules that apply to ``key`` at ``now`` as (name, delta), in table order."""
        now = resolve_now(now)
        m = self.get_config_metrics(key, now=now)
        c = self.config
        out: list[tuple[str, float]] = []
        wr = m.known_win_rate
        if wr is not None and wr < c.low_win_rate:
            out.append(("low_win_rate", c.low_win_rate_boost))
        if m.model_count == 0:
            out.append(("bootstrap", c.bootstrap_boost))
        if m.elo_trend < c.elo_regression_per_hour:
            out.append(("elo_regression", c.elo_regression_boost))
        if wr is not None and wr > c.high_win_rate:
            out.append(("high_win_rate", -c.high_win_rate_penalty))
        if m.last_training_time is not None:
            age_h = (now - m.last_training_time).total_seconds() / 3600.0
            if age_h > c.stale_training_hours:
                out.append(("stale_training", c.stale_training_boost))
        return out

    def get_weight(self, key: str, now: datetime | None = None) -> float:
        c = self.config
        w = c.base_weight + sum(d for _, d in self.weight_factors(key, now))
        return min(c.max_weight, max(c.min_weight, w))

    def get_curriculum_weights(self, now: datetime | None = None) -> dict[str, float]:
        """Weight of every configured key (and any other key with history) at ``now``."""
        now = resolve_now(now)
        keys = list(self.configs)
        keys += sorted(k for k in set(self._hist) | set(self._training) if k not in self.configs)
        return {k: self.get_weight(k, now) for k in keys}

    # -- ingestion bookkeeping (see daemon.decide.ingest) ---------------------
    def ingested_ids(self, config_key: str) -> set[str]:
        key = validate_config_key(config_key)
        if key not in self._ingested:
            self._ingested[key] = self.store.ingested(key)
        return self._ingested[key]

    @property
    def _ingest_limit(self) -> int:
        # Ids older than the recent window are not needed (ingestion skips old games).
        return self.config.history_limit * 2


def get_curriculum_feedback(path: Path | str, config: CurriculumConfig | None = None) -> CurriculumFeedback:
    """Convenience for scripts only (the package builds its own): an opened feedback object."""
    return CurriculumFeedback(path, config).open()
