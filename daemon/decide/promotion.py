"""Promotion by evidence (DESIGN 12): evaluation results in, a decision out, ``now`` passed.

A test pits a ``candidate`` against its config's ``production`` model. Its state
is three counts (candidate wins, draws, losses) and a creation time, so adding
results commutes: the order and batching of games cannot change a decision, and
:func:`decide` only reads. The statistics are in :mod:`daemon.decide.promotion_stats`
(fishtest's generalized SPRT on logistic Elo with draws).

2 players: a game is a win, draw or loss for the candidate. 3-4 players: each game
is the same trinomial observation of the pairwise result "candidate finished ahead
of production" in the final ranking (behind = loss, tied = draw; other seats are
ignored), see :func:`pairwise_outcome`. This is sound because each game contributes
exactly one observation, and games are independent and identically distributed
for a fixed pair (whatever the other seats do, a mixture of trinomials is a
trinomial), so the SPRT's error guarantees hold for the pairwise expected score and
its Elo ``L^-1(score)``. Under a Plackett-Luce ranking model that pairwise Elo is the
strength difference itself, whoever else is seated (Luce's choice axiom); the
simulation tests rank 3-4 seats that way with random-strength baseline players.

Rules, in order:

1. ``mode: manual``: never decide, not even a bootstrap (the numbers are still
   reported; an operator promotes);
2. no production model: accept at once (bootstrap, :func:`is_bootstrap`);
   ``mode: always``: accept at once;
3. ``LLR >= upper``: accept; ``LLR <= lower``: reject;
4. at ``max_games`` still inside the bounds, the fallback decides: ``llr_sign``
   accepts iff LLR > 0 (the evidence leans to H1), ``reject`` keeps production,
   ``elo_interval`` accepts iff the whole 95% Elo interval lies above ``elo0``;
5. otherwise continue.

The test is checked on cumulative counts whenever it is read (each poll tick):
reading more often can stop a test at an earlier state, never change what a given
state decides; the simulation tests check after every game, the most often possible.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any, Final, Literal, TypeVar

from pydantic import ValidationError

from daemon.decide import promotion_stats as st
from daemon.decide.clock import resolve_now
from daemon.keys import validate_config_key
from daemon.settings import PromotionSettings

Mode = Literal["sprt", "manual", "always"]
Kind = Literal["gate", "non_regression"]
Fallback = Literal["llr_sign", "reject", "elo_interval"]
Result = Literal["accept", "reject", "continue"]
DecidedBy = Literal["bootstrap", "mode", "sprt", "cap"]

WIN: Final = 1
DRAW: Final = 0
LOSS: Final = -1
STATE_FORMAT: Final = 1
K = TypeVar("K")


def pairwise_outcome(ranks: Mapping[int, int], candidate_seat: int, production_seat: int) -> int:
    """:data:`WIN`, :data:`DRAW` or :data:`LOSS` for the candidate from a game's final ranking.

    ``ranks`` maps seat -> finishing position (1 = first; equal positions are a tie).
    A 2-player game is the same: the winner ranks 1, the other 2; a draw ranks both 1.
    """
    if candidate_seat == production_seat:
        raise ValueError(f"candidate and production share seat {candidate_seat}")
    try:
        c, p = ranks[candidate_seat], ranks[production_seat]
    except KeyError as e:
        raise ValueError(f"no final rank for seat {e.args[0]} (ranks {dict(ranks)})") from None
    return WIN if c < p else DRAW if c == p else LOSS


@dataclass(frozen=True)
class PromotionParams:
    """The test's knobs, resolved (``elo0``/``elo1`` are the ones ``kind`` selects).

    Build with :meth:`from_settings`; the defaults and the validity rules live in
    :class:`daemon.settings.PromotionSettings`.
    """

    mode: Mode
    kind: Kind
    elo0: float
    elo1: float
    alpha: float
    beta: float
    max_games: int
    fallback: Fallback

    def __post_init__(self) -> None:
        values = {k: v for k, v in asdict(self).items() if k != "kind"}
        try:  # one set of rules: the settings section's (kind "gate" checks elo0/elo1 as given)
            PromotionSettings.model_validate(values)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "params"
            raise ValueError(f"PromotionParams.{where}: {err['msg'].removeprefix('Value error, ')}") from None

    @classmethod
    def from_settings(cls, s: PromotionSettings) -> PromotionParams:
        gate = s.kind == "gate"
        return cls(
            mode=s.mode,
            kind=s.kind,
            elo0=s.elo0 if gate else s.non_regression_elo0,
            elo1=s.elo1 if gate else s.non_regression_elo1,
            alpha=s.alpha,
            beta=s.beta,
            max_games=s.max_games if gate else s.non_regression_max_games,
            fallback=s.fallback,
        )

    @classmethod
    def default(cls) -> PromotionParams:
        return cls.from_settings(PromotionSettings())

    @property
    def bounds(self) -> tuple[float, float]:
        return st.wald_bounds(self.alpha, self.beta)


def _count(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"promotion state: {name} must be a non-negative integer (got {v!r})")
    return v


@dataclass(frozen=True)
class PromotionState:
    """One test's evidence: counts from the candidate's side and when the test began (unix s)."""

    config: str
    candidate: str
    production: str | None
    created_at: float
    wins: int = 0
    draws: int = 0
    losses: int = 0

    def __post_init__(self) -> None:
        validate_config_key(self.config)
        for name in ("wins", "draws", "losses"):
            _count(name, getattr(self, name))
        if not isinstance(self.candidate, str) or not self.candidate:
            raise ValueError(f"promotion state: candidate must be a model id (got {self.candidate!r})")
        if self.production is not None and (not isinstance(self.production, str) or not self.production):
            raise ValueError(
                f"promotion state: production must be a model id or null (got {self.production!r})"
            )
        if self.candidate == self.production:
            raise ValueError(f"promotion state: {self.candidate} cannot be tested against itself")
        if isinstance(self.created_at, bool) or not isinstance(self.created_at, int | float):
            raise ValueError(f"promotion state: created_at must be unix seconds (got {self.created_at!r})")
        if not math.isfinite(self.created_at):
            raise ValueError(f"promotion state: created_at must be finite (got {self.created_at!r})")

    @classmethod
    def start(
        cls, config: str, candidate: str, production: str | None, *, now: datetime | None = None
    ) -> PromotionState:
        """A new test with no games (``production=None``: the config has no production model)."""
        return cls(config, candidate, production, resolve_now(now).timestamp())

    @property
    def games(self) -> int:
        return self.wins + self.draws + self.losses

    def add(self, *, wins: int = 0, draws: int = 0, losses: int = 0) -> PromotionState:
        """This state with more results (counts from the candidate's side)."""
        return replace(
            self,
            wins=self.wins + _count("wins", wins),
            draws=self.draws + _count("draws", draws),
            losses=self.losses + _count("losses", losses),
        )

    def add_outcomes(self, outcomes: Iterable[int]) -> PromotionState:
        """This state with results given one per game as :data:`WIN`, :data:`DRAW` or :data:`LOSS`."""
        c = Counter(outcomes)
        bad = set(c) - {WIN, DRAW, LOSS}
        if bad:
            raise ValueError(f"promotion outcomes must be 1, 0 or -1 (got {sorted(bad, key=repr)!r})")
        return self.add(wins=c[WIN], draws=c[DRAW], losses=c[LOSS])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        return {"format": STATE_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromotionState:
        """Read :meth:`to_dict`'s dict; a bad or foreign dict raises ``ValueError`` naming the field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"promotion state: expected a mapping (got {type(data).__name__})")
        if data.get("format") != STATE_FORMAT:
            raise ValueError(
                f"promotion state: unknown format {data.get('format')!r} (expected {STATE_FORMAT})"
            )
        names = {f.name for f in fields(cls)}
        extra = set(data) - names - {"format"}
        if extra:
            raise ValueError(f"promotion state: unknown keys {sorted(extra)}")
        missing = {"config", "candidate", "production", "created_at"} - set(data)
        if missing:
            raise ValueError(f"promotion state: missing keys {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


def is_bootstrap(state: PromotionState) -> bool:
    """True when the config has no production model: its first candidate is accepted at once."""
    return state.production is None


@dataclass(frozen=True)
class PromotionDecision:
    """What :func:`decide` says; every number is public (status, metrics, stage history)."""

    result: Result
    decided_by: DecidedBy | None  # None while the test continues
    reason: str
    llr: float
    lower: float
    upper: float
    elo0: float
    elo1: float
    games: int
    wins: int
    draws: int
    losses: int
    elo: float
    elo_low: float
    elo_high: float
    expected_games: float  # more games expected before a decision (0 once decided)
    age_seconds: float

    @property
    def elo_margin(self) -> float:
        """Half the width of the Elo interval (the "+/- 30" of the status line)."""
        return (self.elo_high - self.elo_low) / 2.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "elo_margin": self.elo_margin}


def _elo_text(elo: float, margin: float) -> str:
    return f"{round(elo):+d} +/- {round(margin)} Elo"


def decide(state: PromotionState, params: PromotionParams, now: datetime | None = None) -> PromotionDecision:
    """The test's decision for ``state`` at ``now`` (reads only; same inputs, same decision)."""
    llr = st.llr(state.wins, state.draws, state.losses, params.elo0, params.elo1)
    return _decide(state, params, resolve_now(now).timestamp(), llr)


def decide_all(
    states: Mapping[K, PromotionState], params: PromotionParams, now: datetime | None = None
) -> dict[K, PromotionDecision]:
    """:func:`decide` for many tests at once (one tick): the LLRs in one vectorised call."""
    items = list(states.items())
    llrs = st.llr_array(
        [s.wins for _, s in items], [s.draws for _, s in items], [s.losses for _, s in items],
        params.elo0, params.elo1,
    )  # fmt: skip
    at = resolve_now(now).timestamp()
    return {k: _decide(s, params, at, float(x)) for (k, s), x in zip(items, llrs, strict=True)}


def _decide(state: PromotionState, params: PromotionParams, now: float, llr: float) -> PromotionDecision:
    age = max(0.0, now - state.created_at)
    lower, upper = params.bounds
    w, d, lo = state.wins, state.draws, state.losses
    elo, elo_low, elo_high = st.elo_interval(w, d, lo)
    n = state.games
    summary = f"LLR {llr:.2f} after {n} games, {_elo_text(elo, (elo_high - elo_low) / 2)}"
    result: Result = "continue"
    by: DecidedBy | None = None
    if params.mode == "manual":
        reason = f"continue: promotion mode is manual, an operator decides ({summary})"
    elif is_bootstrap(state):
        result, by = "accept", "bootstrap"
        reason = f"accept: {state.config} has no production model, so {state.candidate} is promoted at once"
    elif params.mode == "always":
        result, by = "accept", "mode"
        reason = f"accept: promotion mode is always ({summary})"
    elif llr >= upper:
        result, by = "accept", "sprt"
        reason = f"accept: {summary} reached the upper bound {upper:.2f} (H1: {params.elo1:+g} Elo)"
    elif llr <= lower:
        result, by = "reject", "sprt"
        reason = f"reject: {summary} reached the lower bound {lower:.2f} (H0: {params.elo0:+g} Elo)"
    elif n >= params.max_games:
        result, by, reason = _fallback(params, llr, elo_low, summary)
    else:
        reason = f"continue: {summary}, inside [{lower:.2f}, {upper:.2f}]"
    expected = 0.0
    if result == "continue":
        _, mean, var = st.score_moments(w, d, lo)
        drift, variance = st.llr_drift(mean, var, params.elo0, params.elo1)
        expected = st.expected_exit_time(llr, lower, upper, drift, variance)
        if params.mode == "sprt":
            expected = min(expected, float(params.max_games - n))
    return PromotionDecision(
        result=result,
        decided_by=by,
        reason=reason,
        llr=llr,
        lower=lower,
        upper=upper,
        elo0=params.elo0,
        elo1=params.elo1,
        games=n,
        wins=w,
        draws=d,
        losses=lo,
        elo=elo,
        elo_low=elo_low,
        elo_high=elo_high,
        expected_games=expected,
        age_seconds=age,
    )


def _fallback(
    params: PromotionParams, llr: float, elo_low: float, summary: str
) -> tuple[Result, DecidedBy, str]:
    cap = f"at the {params.max_games}-game cap (fallback {params.fallback})"
    if params.fallback == "llr_sign":
        if llr > 0:
            return "accept", "cap", f"accept {cap}: {summary}, LLR > 0"
        return "reject", "cap", f"reject {cap}: {summary}, LLR <= 0"
    if params.fallback == "elo_interval":
        if elo_low > params.elo0:
            return "accept", "cap", f"accept {cap}: {summary}, interval above {params.elo0:+g} Elo"
        return "reject", "cap", f"reject {cap}: {summary}, interval reaches {params.elo0:+g} Elo"
    return "reject", "cap", f"reject {cap}: {summary}, production is kept"


def _short(model: str, config: str) -> str:
    return model.removeprefix(f"{config}-")


def status_line(state: PromotionState, decision: PromotionDecision) -> str:
    """E.g. ``square8_2p-v4 vs v3: 212 games, LLR 1.8 in [-2.94, 2.94], +24 +/- 30 Elo``."""
    if state.production is None:
        then = "promoted at once" if decision.result == "accept" else "waiting for an operator"
        return f"{state.candidate}: no production model, {then}"
    head = f"{state.candidate} vs {_short(state.production, state.config)}"
    return (
        f"{head}: {decision.games} games, LLR {round(decision.llr, 1) + 0.0:.1f} in "
        f"[{decision.lower:.2f}, {decision.upper:.2f}], {_elo_text(decision.elo, decision.elo_margin)}"
    )
