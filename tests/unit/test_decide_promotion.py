"""The promotion test: its math against independent references, every rule, persistence, purity."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from daemon.decide import promotion_stats as st
from daemon.decide.promotion import (
    DRAW,
    LOSS,
    WIN,
    PromotionDecision,
    PromotionParams,
    PromotionState,
    decide,
    decide_all,
    is_bootstrap,
    pairwise_outcome,
    status_line,
)
from daemon.settings import PROMOTION_MIN_GAMES, PromotionSettings, SettingsError, settings_from_mapping

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DEFAULT = PromotionParams.default()
STATUS = re.compile(
    r"^\S+ vs \S+: \d+ games, LLR -?\d+\.\d in \[-?\d+\.\d\d, -?\d+\.\d\d\], [+-]\d+ \+/- \d+ Elo$"
)


def _state(
    wins: int = 0, draws: int = 0, losses: int = 0, production: str | None = "square8_2p-v3"
) -> PromotionState:
    s = PromotionState.start("square8_2p", "square8_2p-v4", production, now=NOW - timedelta(hours=2))
    return s.add(wins=wins, draws=draws, losses=losses)


def _params(**kw: Any) -> PromotionParams:
    return PromotionParams.from_settings(PromotionSettings(**kw))


# -- the math --------------------------------------------------------------------------------


def _reference_llr(w: int, d: int, lo: int, elo0: float, elo1: float) -> float:
    """fishtest's LLR_logistic written out independently: the constrained MLE by bisection."""
    c = [x if x > 0 else st.REGULARIZE for x in (lo, d, w)]
    n = sum(c)
    p = [x / n for x in c]
    out = 0.0
    for elo, sign in ((elo0, 1.0), (elo1, -1.0)):
        s = 1 / (1 + 10 ** (-elo / 400))
        a = [v - s for v in (0.0, 0.5, 1.0)]
        lo_x, hi_x = -1 / a[2] + 1e-15, -1 / a[0] - 1e-15
        for _ in range(200):  # f is decreasing on (lo_x, hi_x)
            mid = (lo_x + hi_x) / 2
            if sum(pi * ai / (1 + mid * ai) for pi, ai in zip(p, a, strict=True)) > 0:
                lo_x = mid
            else:
                hi_x = mid
        x = (lo_x + hi_x) / 2
        out += sign * sum(ci * math.log1p(x * ai) for ci, ai in zip(c, a, strict=True))
    return out


counts = hst.integers(min_value=0, max_value=5000)
elo_pairs = hst.tuples(hst.floats(-300, 300), hst.floats(1, 200)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=300, deadline=None)
@given(w=counts, d=counts, lo=counts, elos=elo_pairs)
def test_llr_matches_a_bisection_reference(w: int, d: int, lo: int, elos: tuple[float, float]) -> None:
    ref = _reference_llr(w, d, lo, *elos)
    assert st.llr(w, d, lo, *elos) == pytest.approx(ref, rel=1e-6, abs=1e-7)


def test_llr_known_values() -> None:
    # Large samples: the GSPRT agrees with fishtest's normal approximation (LLR_alt2).
    w, d, lo = 4307, 8620, 4063
    n, mean, var = st.score_moments(w, d, lo)
    s0, s1 = st.score_of_elo(0), st.score_of_elo(3)
    alt2 = n * (s1 - s0) * (2 * mean - s0 - s1) / var / 2
    assert st.llr(w, d, lo, 0, 3) == pytest.approx(alt2, rel=5e-3) and alt2 == pytest.approx(2.99, abs=0.01)
    # Small samples stay finite and small: 3 straight wins are 3 * log(L(35) / L(0)).
    assert st.llr(3, 0, 0, 0, 35) == pytest.approx(3 * math.log(st.score_of_elo(35) / 0.5), rel=2e-3)
    assert abs(st.llr(0, 0, 0, 0, 35)) < 1e-4
    # Symmetry: swapping wins and losses and mirroring the hypotheses flips the sign.
    assert st.llr(40, 10, 25, 0, 35) == pytest.approx(-st.llr(25, 10, 40, -35, 0), rel=1e-9)


def test_bounds_elo_and_interval() -> None:
    assert st.wald_bounds(0.05, 0.05) == pytest.approx((-math.log(19), math.log(19)))
    lo, hi = st.wald_bounds(0.01, 0.1)
    assert lo == pytest.approx(math.log(0.1 / 0.99)) and hi == pytest.approx(math.log(0.9 / 0.01))
    assert st.elo_of_score(0.75) == pytest.approx(400 * math.log10(3))
    assert st.elo_of_score(1.0) == pytest.approx(1200.0, rel=1e-3)  # clipped, not infinite
    elo, low, high = st.elo_interval(300, 100, 200)
    mean = (300 + 50) / 600
    var = (300 * (1 - mean) ** 2 + 100 * (0.5 - mean) ** 2 + 200 * mean**2) / 600
    half = 1.959964 * math.sqrt(var / 600)
    assert elo == pytest.approx(st.elo_of_score(mean))
    assert (low, high) == pytest.approx((st.elo_of_score(mean - half), st.elo_of_score(mean + half)))


@pytest.mark.parametrize("drift", [0.0, 1e-12, -1e-8, 1e-8, 0.004, -0.004, 0.05, -0.05, 2.0, -2.0])
def test_expected_exit_time_is_the_brownian_formula(drift: float) -> None:
    b, var = 2.94, 0.01
    expected = b * b / var if drift == 0 else b / drift * math.tanh(drift * b / var)
    assert st.expected_exit_time(0.0, -b, b, drift, var) == pytest.approx(expected, rel=1e-6)
    assert st.expected_exit_time(b, -b, b, drift, var) == 0.0 == st.expected_exit_time(-3, -b, b, drift, var)
    # off-centre, no drift: (x - a)(b - x) / var
    assert st.expected_exit_time(1.0, -b, b, 0.0, var) == pytest.approx((1 + b) * (b - 1) / var)


# -- the rules -------------------------------------------------------------------------------


def test_sprt_accepts_rejects_and_continues() -> None:
    lower, upper = DEFAULT.bounds
    d = decide(_state(130, 40, 70), DEFAULT, NOW)
    assert (d.result, d.decided_by) == ("accept", "sprt") and d.llr >= upper
    assert (
        d.reason.startswith(f"accept: LLR {d.llr:.2f} after 240 games, +") and "upper bound 2.94" in d.reason
    )
    assert d.expected_games == 0.0
    d = decide(_state(40, 40, 80), DEFAULT, NOW)
    assert (
        (d.result, d.decided_by) == ("reject", "sprt") and d.llr <= lower and "lower bound -2.94" in d.reason
    )
    d = decide(_state(60, 30, 50), DEFAULT, NOW)
    assert (d.result, d.decided_by) == ("continue", None) and lower < d.llr < upper
    assert d.reason == f"continue: LLR {d.llr:.2f} after 140 games, {_elo(d)}, inside [-2.94, 2.94]"
    assert 0 < d.expected_games <= DEFAULT.max_games - 140
    assert (d.games, d.wins, d.draws, d.losses, d.elo0, d.elo1) == (140, 60, 30, 50, 0.0, 35.0)
    assert d.age_seconds == 7200.0


def _elo(d: PromotionDecision) -> str:
    return f"{round(d.elo):+d} +/- {round(d.elo_margin)} Elo"


def test_bootstrap_accepts_the_first_candidate_at_once() -> None:
    s = _state(production=None)
    assert is_bootstrap(s) and not is_bootstrap(_state())
    d = decide(s, DEFAULT, NOW)
    assert (d.result, d.decided_by, d.games) == ("accept", "bootstrap", 0)
    assert d.reason == "accept: square8_2p has no production model, so square8_2p-v4 is promoted at once"
    assert status_line(s, d) == "square8_2p-v4: no production model, promoted at once"


def test_modes() -> None:
    always, manual = _params(mode="always"), _params(mode="manual")
    d = decide(_state(), always, NOW)
    assert (d.result, d.decided_by) == ("accept", "mode") and d.reason.startswith(
        "accept: promotion mode is always"
    )
    for s in (_state(500, 0, 0), _state(0, 0, 500), _state(30, 0, 5000), _state(production=None)):
        d = decide(s, manual, NOW)
        assert (d.result, d.decided_by) == ("continue", None)
        assert d.reason.startswith("continue: promotion mode is manual, an operator decides (LLR ")
    assert decide(_state(500, 0, 0), manual, NOW).llr > DEFAULT.bounds[1]  # the numbers are still there
    assert status_line(_state(production=None), decide(_state(production=None), manual, NOW)).endswith(
        "waiting for an operator"
    )


def _at_cap(params: PromotionParams, w: int, d: int, lo: int) -> PromotionDecision:
    dec = decide(_state(w, d, lo), params, NOW)
    lower, upper = params.bounds
    assert w + d + lo >= params.max_games and lower < dec.llr < upper  # inside the bounds at the cap
    return dec


def test_cap_fallback_llr_sign() -> None:
    p = _params(max_games=PROMOTION_MIN_GAMES)  # 50
    d = _at_cap(p, 27, 2, 21)
    assert (d.result, d.decided_by) == ("accept", "cap") and d.llr > 0
    assert d.reason.startswith("accept at the 50-game cap (fallback llr_sign): LLR ") and d.reason.endswith(
        "LLR > 0"
    )
    d = _at_cap(p, 23, 2, 25)
    assert (d.result, d.decided_by) == ("reject", "cap") and d.llr <= 0 and d.reason.endswith("LLR <= 0")
    # one game below the cap the same evidence continues
    assert decide(_state(27, 2, 20), p, NOW).result == "continue"


def test_cap_fallback_reject_and_elo_interval() -> None:
    p = _params(max_games=50, fallback="reject")
    d = _at_cap(p, 28, 2, 20)
    assert (
        (d.result, d.decided_by) == ("reject", "cap")
        and d.llr > 0
        and d.reason.endswith("production is kept")
    )
    # elo_interval: accept only when the whole interval is above elo0 (here -10, non-regression).
    p = _params(kind="non_regression", non_regression_max_games=200, fallback="elo_interval")
    assert (p.elo0, p.elo1, p.max_games) == (-10.0, 0.0, 200)
    d = _at_cap(p, 118, 0, 82)
    assert d.elo_low > -10 and (d.result, d.decided_by) == ("accept", "cap"), d
    assert d.reason.endswith("interval above -10 Elo")
    d = _at_cap(p, 104, 0, 96)
    assert d.elo_low <= -10 and d.result == "reject" and d.reason.endswith("interval reaches -10 Elo")


def test_status_line() -> None:
    s = _state(51, 126, 35)
    d = decide(s, DEFAULT, NOW)
    assert status_line(s, d) == "square8_2p-v4 vs v3: 212 games, LLR 1.3 in [-2.94, 2.94], +26 +/- 30 Elo"
    assert STATUS.match("square8_2p-v4 vs v3: 212 games, LLR 1.8 in [-2.94, 2.94], +24 +/- 30 Elo")
    s = _state(20, 10, 26)
    d = decide(s, DEFAULT, NOW)
    assert STATUS.match(status_line(s, d)) and ", -" in status_line(s, d)  # negative Elo keeps its sign
    s = PromotionState.start("hex8_3p", "hex8_3p-v9", "other-model", now=NOW)
    assert status_line(s, decide(s, DEFAULT, NOW)).startswith(
        "hex8_3p-v9 vs other-model: 0 games, LLR 0.0 in"
    )


# -- inputs, params and settings -------------------------------------------------------------


def test_pairwise_outcome_from_rankings() -> None:
    assert pairwise_outcome({0: 2, 1: 3, 2: 1}, 0, 1) == WIN
    assert pairwise_outcome({0: 3, 1: 1, 2: 2, 3: 4}, 0, 1) == LOSS
    assert pairwise_outcome({0: 2, 1: 2, 2: 1}, 0, 1) == DRAW  # tied positions
    assert pairwise_outcome({1: 1, 2: 2}, 2, 1) == LOSS  # 2 players: the winner ranks 1
    with pytest.raises(ValueError, match="no final rank for seat 5"):
        pairwise_outcome({0: 1, 1: 2}, 5, 1)
    with pytest.raises(ValueError, match="share seat 1"):
        pairwise_outcome({0: 1, 1: 2}, 1, 1)


def test_add_outcomes_counts_and_rejects_bad_values() -> None:
    s = _state().add_outcomes([WIN, WIN, DRAW, LOSS, WIN])
    assert (s.wins, s.draws, s.losses, s.games) == (3, 1, 1, 5)
    with pytest.raises(ValueError, match=r"must be 1, 0 or -1 \(got \[2\]\)"):
        _state().add_outcomes([1, 2])
    with pytest.raises(ValueError, match="wins must be a non-negative integer"):
        _state().add(wins=-1)


def test_params_validation() -> None:
    assert PromotionParams("sprt", "gate", 0.0, 35.0, 0.05, 0.05, 2000, "llr_sign") == DEFAULT
    nr = _params(kind="non_regression")
    assert (nr.elo0, nr.elo1, nr.max_games) == (-10.0, 0.0, 20000)
    for kw, msg in [
        ({"alpha": 0.5}, "alpha: Input should be less than 0.5"),
        ({"beta": 0.0}, "beta: Input should be greater than 0"),
        ({"elo0": 35.0}, "elo0 \\(35.0\\) must be below elo1 \\(35.0\\)"),
        ({"elo1": math.inf}, "elo1: Input should be a finite number"),
        ({"max_games": 10}, "max_games: Input should be greater than or equal to 50"),
    ]:
        with pytest.raises(ValueError, match=msg):
            PromotionParams(**{**DEFAULT.__dict__, **kw})


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"alpha": 0.7}, "promotion.alpha: Input should be less than 0.5"),
        ({"elo0": 50}, "promotion: elo0 (50.0) must be below elo1 (35.0)"),
        (
            {"non_regression_elo0": 0},
            "promotion: non_regression_elo0 (0.0) must be below non_regression_elo1",
        ),
        ({"elo1": "nan"}, "promotion.elo1: Input should be a finite number"),
        ({"max_games": 5}, "promotion.max_games: Input should be greater than or equal to 50"),
        ({"fallback": "coin"}, "promotion.fallback: Input should be 'llr_sign', 'reject' or 'elo_interval'"),
        ({"mode": "auto"}, "promotion.mode: Input should be 'sprt', 'manual' or 'always'"),
        ({"elo_0": 1}, "promotion.elo_0: unknown key"),
    ],
)
def test_settings_errors(section: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as e:
        settings_from_mapping({"promotion": section}, {})
    assert str(e.value).startswith(message)


def test_settings_defaults_and_environment() -> None:
    s = settings_from_mapping({}, {})
    assert PromotionParams.from_settings(s.promotion) == DEFAULT
    s = settings_from_mapping(
        {"promotion": {"kind": "non_regression"}}, {"RINGRIFT_DAEMON_PROMOTION__MODE": "manual"}
    )
    assert (s.promotion.mode, s.promotion.kind) == ("manual", "non_regression")


# -- persistence -----------------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    s = _state(12, 3, 9)
    data = json.loads(json.dumps(s.to_dict()))
    assert data == {
        "format": 1,
        "config": "square8_2p",
        "candidate": "square8_2p-v4",
        "production": "square8_2p-v3",
        "created_at": (NOW - timedelta(hours=2)).timestamp(),
        "wins": 12,
        "draws": 3,
        "losses": 9,
    }
    assert PromotionState.from_dict(data) == s
    boot = _state(production=None)
    assert PromotionState.from_dict(json.loads(json.dumps(boot.to_dict()))) == boot


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "unknown format 2"),
        ({"wins": -3}, "wins must be a non-negative integer"),
        ({"draws": 1.5}, "draws must be a non-negative integer"),
        ({"losses": True}, "losses must be a non-negative integer"),
        ({"config": "square9_2p"}, "square9_2p"),
        ({"candidate": ""}, "candidate must be a model id"),
        ({"production": "square8_2p-v4"}, "cannot be tested against itself"),
        ({"created_at": "yesterday"}, "created_at must be unix seconds"),
        ({"created_at": math.nan}, "created_at must be finite"),
        ({"extra": 1}, r"unknown keys \['extra'\]"),
    ],
)
def test_bad_state_dicts_are_refused(change: dict[str, Any], message: str) -> None:
    data = {**_state(1, 2, 3).to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        PromotionState.from_dict(data)


def test_missing_keys_and_non_mappings_are_refused() -> None:
    data = _state().to_dict()
    del data["created_at"]
    with pytest.raises(ValueError, match=r"missing keys \['created_at'\]"):
        PromotionState.from_dict(data)
    with pytest.raises(ValueError, match="expected a mapping"):
        PromotionState.from_dict([1, 2])  # type: ignore[arg-type]


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(_state(), DEFAULT, datetime(2025, 3, 1))


# -- purity: order, batching and reads cannot matter ----------------------------------------

batches = hst.lists(hst.tuples(*(hst.integers(0, 60),) * 3), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    batches=batches, order=hst.randoms(use_true_random=False), reads=hst.lists(hst.booleans(), max_size=12)
)
def test_decision_ignores_batch_order_and_reads(
    batches: list[tuple[int, int, int]], order: Any, reads: list[bool]
) -> None:
    p = _params(max_games=400)
    in_order = _state()
    for w, d, lo in batches:
        in_order = in_order.add(wins=w, draws=d, losses=lo)
    shuffled = list(batches)
    order.shuffle(shuffled)
    other = _state()
    seen: list[PromotionDecision] = []
    for i, (w, d, lo) in enumerate(shuffled):
        other = other.add(wins=w, draws=d, losses=lo)
        if i < len(reads) and reads[i]:
            seen.append(decide(other, p, NOW))  # reading in between changes nothing
    # one batch per game outcome, in the other order, read after every game
    per_game = _state().add_outcomes(
        [WIN] * in_order.wins + [DRAW] * in_order.draws + [LOSS] * in_order.losses
    )
    assert other == in_order == per_game
    first = decide(in_order, p, NOW)
    assert decide(other, p, NOW) == first == decide(per_game, p, NOW) == decide(in_order, p, NOW)
    assert PromotionState.from_dict(json.loads(json.dumps(other.to_dict()))) == in_order


@settings(max_examples=100, deadline=None)
@given(hst.lists(hst.tuples(*(hst.integers(0, 3000),) * 3), min_size=1, max_size=12))
def test_decide_all_is_decide_for_each(tests: list[tuple[int, int, int]]) -> None:
    states = {i: _state(*c) for i, c in enumerate(tests)}
    assert decide_all(states, DEFAULT, NOW) == {i: decide(s, DEFAULT, NOW) for i, s in states.items()}
    assert decide_all({}, DEFAULT, NOW) == {}
