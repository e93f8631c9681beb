"""Training triggers: three signals in [0, 1] -> a decision with a reason and a priority.

Signals (``TriggerConfig`` names the thresholds)::

    data_freshness         = new_games / freshness_threshold
                             (new_games = games_count - games_at_training, all of
                             games_count when the config never trained; a caller
                             may also pass new_games itself, as the service does)
    model_staleness        = hours since the last model / staleness_hours
                             (0 with no model: that is the bootstrap case; 0 and
                             "model age unknown" when models exist but no time is known)
    performance_regression = (min_win_rate - win_rate) / regression_span
                             (regression_span defaults to min_win_rate, so a win
                             rate of 0 scores 1 and half the minimum scores 0.5;
                             0 when the win rate is unknown or at/above the minimum)

all clamped to [0, 1]. Train when freshness >= 1, or staleness >= 1 and freshness
>= staleness_min_freshness, or regression >= regression_threshold; with no model,
train once games_count >= bootstrap_min_games. A run of the same config within
``min_interval`` blocks. priority = weighted sum of the scores x the
curriculum weight. Reading a decision never changes state.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from daemon.decide.clock import opt_ts, resolve_now
from daemon.decide.store import DecideStore
from daemon.keys import validate_config_key
from daemon.settings import TriggerSettings

SIGNALS: Final = ("data_freshness", "model_staleness", "performance_regression")


# The parameters are the ``triggers:`` settings section itself: one name and one default per knob.
TriggerConfig = TriggerSettings


@dataclass(frozen=True)
class ConfigState:
    """What the triggers know about one config (times are unix seconds)."""

    games_count: int = 0
    new_games: int = 0
    win_rate: float | None = None
    # Usable games when the last training completed (None: never trained here).
    games_at_training: int | None = None
    # Upstream's ``elo=`` keyword: recorded for the caller, not a signal.
    elo: float | None = None
    model_count: int = 0
    last_training_time: float | None = None
    last_run_time: float | None = None
    curriculum_weight: float = 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ConfigState:
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class TriggerDecision:
    should_train: bool
    reason: str
    priority: float
    signal_scores: dict[str, float] = field(default_factory=dict)
    config_key: str = ""
    curriculum_weight: float = 1.0
    deciding_signal: str | None = None
    blocked_by: tuple[str, ...] = ()


class _Unset:
    pass


UNSET: Final = _Unset()


def _clamp(x: float) -> float:
    return 0.0 if x != x else min(1.0, max(0.0, x))  # NaN -> 0


def _min(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


class TrainingTriggers:
    """Per-config state -> :class:`TriggerDecision`. Optionally persisted in a :class:`DecideStore`.

    Without a store it is pure memory (the service rebuilds the state every tick
    from its journal, registry and curriculum). With one, :meth:`open` reloads the
    last state and :meth:`update_config_state` writes changes through.
    """

    def __init__(
        self, config: TriggerConfig | None = None, store: DecideStore | Path | str | None = None
    ) -> None:
        self.config = config or TriggerConfig()
        self._owns_store = store is not None and not isinstance(store, DecideStore)
        self.store = DecideStore(store) if isinstance(store, Path | str) else store
        self._states: dict[str, ConfigState] = {}

    @classmethod
    def from_settings(
        cls, settings: TriggerSettings, store: DecideStore | Path | str | None = None
    ) -> TrainingTriggers:
        return cls(settings, store)

    def open(self) -> TrainingTriggers:
        if self.store is not None:
            if self._owns_store:
                self.store.open()
            self._states = {
                k: ConfigState.from_json(v) for k, v in self.store.states("trigger_state").items()
            }
        return self

    def close(self) -> None:
        if self.store is not None and self._owns_store:
            self.store.close()

    # -- state ----------------------------------------------------------------
    def get_state(self, key: str) -> ConfigState:
        return self._states.get(validate_config_key(key), ConfigState())

    def update_config_state(
        self,
        key: str,
        *,
        games_count: int | _Unset = UNSET,
        new_games: int | _Unset = UNSET,
        win_rate: float | _Unset | None = UNSET,
        model_count: int | _Unset = UNSET,
        last_training_time: datetime | _Unset | None = UNSET,
        last_run_time: datetime | _Unset | None = UNSET,
        curriculum_weight: float | _Unset = UNSET,
        games_at_training: int | _Unset | None = UNSET,
        elo: float | _Unset | None = UNSET,
    ) -> ConfigState:
        """Set the given fields (others keep their value); returns the new state.

        ``games_count`` is the config's total usable games. Unless ``new_games`` is given too,
        the new games are ``games_count - games_at_training`` (all of them when it never trained).
        """
        key = validate_config_key(key)
        old = self._states.get(key, ConfigState())
        changes: dict[str, Any] = {}
        if not isinstance(games_count, _Unset):
            changes["games_count"] = _non_negative(key, "games_count", games_count)
        if not isinstance(games_at_training, _Unset):
            at = games_at_training
            changes["games_at_training"] = None if at is None else _non_negative(key, "games_at_training", at)
        if not isinstance(new_games, _Unset):
            changes["new_games"] = _non_negative(key, "new_games", new_games)
        elif "games_count" in changes or "games_at_training" in changes:
            total = changes.get("games_count", old.games_count)
            base = changes.get("games_at_training", old.games_at_training)
            changes["new_games"] = max(0, total - (base or 0))
        if not isinstance(elo, _Unset):
            if elo is not None and elo != elo:
                raise ValueError(f"{key}: elo must be a number or None, got {elo!r}")
            changes["elo"] = None if elo is None else float(elo)
        if not isinstance(win_rate, _Unset):
            if win_rate is not None and not 0.0 <= win_rate <= 1.0:
                raise ValueError(f"{key}: win_rate must be within [0, 1] or None, got {win_rate!r}")
            changes["win_rate"] = None if win_rate is None else float(win_rate)
        if not isinstance(model_count, _Unset):
            changes["model_count"] = _non_negative(key, "model_count", model_count)
        if not isinstance(last_training_time, _Unset):
            changes["last_training_time"] = opt_ts(last_training_time)
        if not isinstance(last_run_time, _Unset):
            changes["last_run_time"] = opt_ts(last_run_time)
        if not isinstance(curriculum_weight, _Unset):
            changes["curriculum_weight"] = float(curriculum_weight)
        new = replace(old, **changes)
        if new != old or key not in self._states:
            self._states[key] = new
            if self.store is not None:
                self.store.put_state("trigger_state", key, new.to_json())
        return new

    def record_training_complete(
        self,
        key: str,
        *,
        games_at_training: int | None = None,
        now: datetime | None = None,
        model_count: int | None = None,
    ) -> ConfigState:
        """A training of ``key`` completed at ``now`` on ``games_at_training`` usable games
        (default: the current ``games_count``): freshness counts from there, the model count
        grows by one (or is ``model_count``), and staleness restarts."""
        key = validate_config_key(key)
        old = self._states.get(key, ConfigState())
        at = old.games_count if games_at_training is None else games_at_training
        t = resolve_now(now)
        return self.update_config_state(
            key,
            games_at_training=at,
            model_count=old.model_count + 1 if model_count is None else model_count,
            last_training_time=t,
            last_run_time=t,
        )

    # -- decisions (pure) -----------------------------------------------------
    def signal_scores(self, key: str, now: datetime | None = None) -> dict[str, float]:
        return self._scores(self.get_state(key), resolve_now(now).timestamp())

    def _scores(self, s: ConfigState, now: float) -> dict[str, float]:
        c = self.config
        fresh = _clamp(s.new_games / c.freshness_threshold)
        stale = 0.0
        if s.model_count > 0 and s.last_training_time is not None:
            stale = _clamp((now - s.last_training_time) / 3600.0 / c.staleness_hours)
        regr = 0.0
        if s.win_rate is not None and s.win_rate < c.min_win_rate:
            span = c.regression_span if c.regression_span is not None else c.min_win_rate
            regr = _clamp((c.min_win_rate - s.win_rate) / span) if span > 0 else 0.0
        return {"data_freshness": fresh, "model_staleness": stale, "performance_regression": regr}

    def should_train(self, key: str, now: datetime | None = None) -> TriggerDecision:
        key = validate_config_key(key)
        t = resolve_now(now).timestamp()
        s = self._states.get(key, ConfigState())
        c = self.config
        sc = self._scores(s, t)
        fresh, stale, regr = sc["data_freshness"], sc["model_staleness"], sc["performance_regression"]
        bootstrap = s.model_count == 0 and s.games_count >= c.bootstrap_min_games
        base = c.freshness_weight * fresh + c.staleness_weight * stale + c.regression_weight * regr
        if bootstrap:
            base = max(base, c.bootstrap_score)
        priority = base * s.curriculum_weight
        need_fresh = c.staleness_min_freshness * c.freshness_threshold
        age_h = (t - s.last_training_time) / 3600.0 if s.last_training_time is not None else None

        deciding: str | None = None
        why = ""
        if bootstrap:
            deciding = "bootstrap"
            why = f"bootstrap: no model yet and {s.games_count} usable games >= {c.bootstrap_min_games}"
        elif fresh >= 1.0:
            deciding = "data_freshness"
            why = f"{s.new_games} new games >= {c.freshness_threshold}"
        elif regr >= c.regression_threshold and s.win_rate is not None:
            deciding = "performance_regression"
            why = (
                f"win rate {s.win_rate:.2f} < {c.min_win_rate:.2f} "
                f"(regression {regr:.2f} >= {c.regression_threshold:.2f})"
            )
        elif stale >= 1.0 and fresh >= c.staleness_min_freshness and age_h is not None:
            deciding = "model_staleness"
            why = (
                f"model {age_h:.1f} h old >= {c.staleness_hours:.1f} h with {s.new_games} new games "
                f">= {need_fresh:.0f}"
            )

        blocked: list[tuple[str, str]] = []
        last = max((x for x in (s.last_run_time, s.last_training_time) if x is not None), default=None)
        if last is not None and t - last < c.min_interval:
            ago, left = t - last, c.min_interval - (t - last)
            blocked.append(
                (
                    "min_interval",
                    f"last run {_min(max(ago, 0.0))} ago, {_min(left)} left of the "
                    f"{_min(c.min_interval)} minimum interval",
                )
            )
        if deciding is not None:
            if not blocked:
                return TriggerDecision(
                    True, f"train: {why}", priority, sc, key, s.curriculum_weight, deciding
                )
            return TriggerDecision(
                False,
                f"{why}, but {blocked[0][1]}",
                priority,
                sc,
                key,
                s.curriculum_weight,
                deciding,
                ("min_interval",),
            )
        preds = self._blocking(s, sc, age_h, need_fresh) + blocked
        return TriggerDecision(
            False,
            "; ".join(p for _, p in preds),
            priority,
            sc,
            key,
            s.curriculum_weight,
            None,
            tuple(n for n, _ in preds),
        )

    def _blocking(
        self, s: ConfigState, sc: dict[str, float], age_h: float | None, need_fresh: float
    ) -> list[tuple[str, str]]:
        c = self.config
        out = [("data_freshness", f"{s.new_games} new games < {c.freshness_threshold}")]
        if s.model_count == 0:
            out.append(
                (
                    "bootstrap",
                    f"no model yet and {s.games_count} usable games < {c.bootstrap_min_games} to bootstrap",
                )
            )
        elif age_h is None:
            out.append(("model_staleness", "model age unknown"))
        elif sc["model_staleness"] < 1.0:
            out.append(("model_staleness", f"model {age_h:.1f} h old < {c.staleness_hours:.1f} h"))
        else:
            out.append(
                (
                    "model_staleness",
                    f"model {age_h:.1f} h old >= {c.staleness_hours:.1f} h but "
                    f"{s.new_games} new games < {need_fresh:.0f}",
                )
            )
        if s.win_rate is None:
            out.append(("performance_regression", "win rate unknown"))
        elif s.win_rate >= c.min_win_rate:
            out.append(("performance_regression", f"win rate {s.win_rate:.2f} >= {c.min_win_rate:.2f}"))
        else:
            out.append(
                (
                    "performance_regression",
                    f"win rate {s.win_rate:.2f} < {c.min_win_rate:.2f} but regression "
                    f"{sc['performance_regression']:.2f} < {c.regression_threshold:.2f}",
                )
            )
        return out

    def get_training_queue(self, now: datetime | None = None) -> list[TriggerDecision]:
        """Configs that should train now, highest priority first (ties by key)."""
        now = resolve_now(now)
        ready = [d for d in (self.should_train(k, now) for k in sorted(self._states)) if d.should_train]
        return sorted(ready, key=lambda d: (-d.priority, d.config_key))

    def decisions(self, now: datetime | None = None) -> dict[str, TriggerDecision]:
        now = resolve_now(now)
        return {k: self.should_train(k, now) for k in sorted(self._states)}


def _non_negative(key: str, name: str, value: int) -> int:
    if value < 0:
        raise ValueError(f"{key}: {name} must be >= 0, got {value}")
    return int(value)
