"""The promotion test's error rates and lengths, by simulation (seeded, numpy, pure).

Each scenario runs 2,000 independent tests with the default parameters (elo0 = 0,
elo1 = 35, alpha = beta = 0.05, the default game cap and fallback), reading the
test after every game (the most often it can be read, so the worst case for the
error rates). The LLR is computed by the module's own vectorised function, and
every test's stopping state is re-decided by the module's scalar :func:`decide`.

Games (the true pairwise Elo is always that of the candidate's expected score):

* 2 players: a trinomial with 20% draws, the win share set so E[score] = L(elo);
* 3-4 players: a Plackett-Luce ranking of all seats (Gumbel-max: seat utility =
  strength * ln(10) / 400 + Gumbel noise, highest finishes first); production has
  strength 0, the candidate ``delta``, the other seats fresh N(0, 100 Elo)
  baseline players every game; with probability ``tie`` the candidate and
  production tie (eliminated together). Under Plackett-Luce the chance that the
  candidate finishes ahead of production is ``L(delta)`` whatever the other seats,
  so ``delta`` solves ``(1 - tie) L(delta) + tie / 2 = L(elo)``. Outcomes go
  through :func:`pairwise_outcome` on the ranks (checked on a sample).

Binomial margin: a rate measured over n = 2,000 tests may exceed its true value
by up to 3 standard errors, 3 * sqrt(0.05 * 0.95 / 2000) = 0.0146 at 5%, so the
checks are false-accept <= alpha + 0.0146 and false-reject <= beta + 0.0146.

``python -m tests.unit.test_decide_promotion_sim`` prints the measured table as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pytest

from daemon.decide.promotion import PromotionParams, PromotionState, decide, pairwise_outcome
from daemon.decide.promotion_stats import expected_exit_time, llr_array, llr_drift, score_of_elo
from daemon.settings import PromotionSettings

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
N_TESTS = 2000
MARGIN = 3 * math.sqrt(0.05 * 0.95 / N_TESTS)  # 0.0146
TIES = {2: 0.20, 3: 0.05, 4: 0.0}  # draw share (2p) / candidate-production tie share (3-4p)
BLOCK = 256  # games simulated per step for every test still running

IntArray = npt.NDArray[np.int64]
Sampler = Callable[[np.random.Generator, int, int], npt.NDArray[np.int8]]


def _solve_pl_delta(target: float, tie: float) -> float:
    """The Plackett-Luce strength gap whose pairwise score, with ties, is ``target``."""
    p_ahead = (target - tie / 2) / (1 - tie)
    return -400.0 * math.log10(1.0 / p_ahead - 1.0)


def two_player(elo: float) -> Sampler:
    s, d = score_of_elo(elo), TIES[2]
    p_win = s - d / 2  # (1 - d) * win share + d / 2 = s
    probs = np.array([1 - p_win - d, d, p_win])  # loss, draw, win

    def sample(rng: np.random.Generator, tests: int, games: int) -> npt.NDArray[np.int8]:
        return (rng.choice(3, size=(tests, games), p=probs) - 1).astype(np.int8)

    return sample


def ranks_of(utility: npt.NDArray[np.float64]) -> IntArray:
    """Finishing positions (1 = first) from utilities along the last axis (no ties)."""
    return 1 + (utility[..., None, :] > utility[..., :, None]).sum(axis=-1)


def multi_player(players: int, elo: float) -> Sampler:
    tie = TIES[players]
    delta = _solve_pl_delta(score_of_elo(elo), tie)
    scale = math.log(10) / 400

    def sample(rng: np.random.Generator, tests: int, games: int) -> npt.NDArray[np.int8]:
        strength = rng.normal(0.0, 100.0, size=(tests, games, players))
        strength[..., 0], strength[..., 1] = delta, 0.0  # seat 0 candidate, seat 1 production
        ranks = ranks_of(strength * scale + rng.gumbel(size=strength.shape))
        tied = rng.random((tests, games)) < tie
        ranks[..., 0] = np.where(tied, ranks[..., 1], ranks[..., 0])
        return np.sign(ranks[..., 1] - ranks[..., 0]).astype(np.int8)

    return sample


@dataclass
class Run:
    accepted: npt.NDArray[np.bool_]
    games: IntArray
    counts: IntArray  # (tests, 3): wins, draws, losses at the stop
    last: IntArray  # the outcome of each test's last game (1, 0, -1)
    cap: int

    def summary(self) -> dict[str, float]:
        return {
            "accept_rate": round(float(self.accepted.mean()), 4),
            "mean_games": round(float(self.games.mean()), 1),
            "p95_games": float(np.percentile(self.games, 95)),
            "max_games": int(self.games.max()),
            "at_cap": round(float((self.games >= self.cap).mean()), 4),
        }


def run_tests(sampler: Sampler, params: PromotionParams, seed: int, tests: int = N_TESTS) -> Run:
    """``tests`` sequential tests, each read after every game until it decides or hits the cap."""
    rng = np.random.default_rng(seed)
    lower, upper = params.bounds
    counts = np.zeros((tests, 3), dtype=np.int64)
    accepted = np.zeros(tests, dtype=bool)
    games = np.zeros(tests, dtype=np.int64)
    last = np.zeros(tests, dtype=np.int64)
    active = np.arange(tests)
    played = 0
    while active.size and played < params.max_games:
        g = min(BLOCK, params.max_games - played)
        out = sampler(rng, active.size, g)
        cum = [counts[active, i, None] + np.cumsum(out == v, axis=1) for i, v in enumerate((1, 0, -1))]
        llr = llr_array(cum[0], cum[1], cum[2], params.elo0, params.elo1)
        hit = (llr >= upper) | (llr <= lower)
        stop = hit.any(axis=1)
        first = np.where(stop, hit.argmax(axis=1), g - 1)
        rows = np.arange(active.size)
        for i in range(3):
            counts[active, i] = cum[i][rows, first]
        games[active] = played + first + 1
        last[active] = out[rows, first]
        accepted[active[stop]] = llr[rows[stop], first[stop]] >= upper
        active = active[~stop]
        played += g
    for t in active:  # at the cap: the module's fallback decides
        d = decide(_state(counts[t]), params, NOW)
        assert d.decided_by == "cap", d
        accepted[t] = d.result == "accept"
    return Run(accepted, games, counts, last, params.max_games)


def _state(c: IntArray) -> PromotionState:
    base = PromotionState("square8_2p", "square8_2p-v2", "square8_2p-v1", NOW.timestamp())
    return base.add(wins=int(c[0]), draws=int(c[1]), losses=int(c[2]))


def sampler_for(players: int, elo: float) -> Sampler:
    return two_player(elo) if players == 2 else multi_player(players, elo)


def check_against_decide(run: Run, params: PromotionParams, sample: int = 200) -> None:
    """The scalar decide() agrees with the vectorised scan on a sample of tests: the same result at
    the stop, and continue one game before it."""
    for t in range(min(sample, run.games.size)):
        c = run.counts[t]
        d = decide(_state(c), params, NOW)
        assert d.result == ("accept" if run.accepted[t] else "reject"), (t, c, d)
        before = c - np.eye(3, dtype=np.int64)[(1, 0, -1).index(int(run.last[t]))]
        assert decide(_state(before), params, NOW).result == "continue", (t, c)


PARAMS = PromotionParams.default()
PARAMS_NR = PromotionSettings(kind="non_regression")
SCENARIOS = [(p, e) for p in (2, 3, 4) for e in (PARAMS.elo0, PARAMS.elo1, -100.0, 100.0)]


def measure(players: int, elo: float, params: PromotionParams = PARAMS) -> tuple[Run, dict[str, float]]:
    seed = 1000 * players + int(elo) + 500
    run = run_tests(sampler_for(players, elo), params, seed)
    return run, {"players": players, "elo": elo, **run.summary()}


@pytest.mark.parametrize("players", [2, 3, 4])
def test_error_rates_within_alpha_beta(players: int) -> None:
    p = PARAMS
    run0, s0 = measure(players, p.elo0)
    run1, s1 = measure(players, p.elo1)
    false_accept, false_reject = s0["accept_rate"], 1 - s1["accept_rate"]
    assert false_accept <= p.alpha + MARGIN, s0
    assert false_reject <= p.beta + MARGIN, s1
    # the cap is a rare backstop at the hypotheses, not the usual way out
    assert (run0.games >= p.max_games).mean() < 0.02 and (run1.games >= p.max_games).mean() < 0.02
    check_against_decide(run0, p)
    check_against_decide(run1, p)


def true_moments(players: int, elo: float) -> tuple[float, float]:
    """Mean and variance of the simulated games' pairwise score (draw/tie share from TIES)."""
    tie, mean = TIES[players], score_of_elo(elo)
    win = mean - tie / 2
    return mean, win * (1 - mean) ** 2 + tie * (0.5 - mean) ** 2 + (1 - win - tie) * mean**2


@pytest.mark.parametrize("players", [2, 3, 4])
def test_clear_differences_decide_fast(players: int) -> None:
    p = PARAMS
    lower, upper = p.bounds
    for elo, rate in ((-100.0, 0.0), (100.0, 1.0)):
        _, s = measure(players, elo)
        assert s["accept_rate"] == rate, s
        assert s["mean_games"] < p.max_games / 15 and s["p95_games"] < p.max_games / 5, s
        # the expected games a decision reports (the Brownian approximation) predict the measured
        # mean; the measured one is longer by the overshoot of the discrete walk
        drift, var = llr_drift(*true_moments(players, elo), p.elo0, p.elo1)
        predicted = expected_exit_time(0.0, lower, upper, drift, var)
        assert 0.75 < predicted / s["mean_games"] < 1.05, (predicted, s)


def test_non_regression_mode_error_rates() -> None:
    p = PromotionParams.from_settings(PARAMS_NR)
    _, s0 = measure(2, p.elo0, p)
    _, s1 = measure(2, p.elo1, p)
    assert s0["accept_rate"] <= p.alpha + MARGIN and 1 - s1["accept_rate"] <= p.beta + MARGIN, (s0, s1)


def test_multi_player_samples_match_pairwise_outcome() -> None:
    """The sampler's vectorised outcome equals pairwise_outcome() on its own rankings, and the
    pairwise score of candidate vs production is L(elo) (checked on 200,000 games)."""
    rng = np.random.default_rng(7)
    ranks = ranks_of(rng.normal(size=(50, 4)))
    for r in ranks:
        seats = {i: int(x) for i, x in enumerate(r)}
        assert pairwise_outcome(seats, 0, 1) == int(np.sign(r[1] - r[0]))
    for players in (3, 4):
        out = multi_player(players, 100.0)(np.random.default_rng(players), 200, 1000)
        score = float(((out + 1) / 2).mean())
        assert abs(score - score_of_elo(100.0)) < 3 * math.sqrt(0.25 / out.size), (players, score)


if __name__ == "__main__":
    rows = [measure(p, e)[1] for p, e in SCENARIOS]
    nr = PromotionParams.from_settings(PARAMS_NR)
    rows += [{"kind": "non_regression", **measure(2, e, nr)[1]} for e in (nr.elo0, nr.elo1)]
    print(json.dumps({"tests_per_scenario": N_TESTS, "margin": round(MARGIN, 4), "rows": rows}, indent=1))
