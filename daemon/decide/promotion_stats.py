"""The math of the promotion test: a generalized SPRT on logistic Elo with draws.

Model (the one fishtest runs, ``server/fishtest/stats/LLRcalc.py``: ``LLR_logistic``
with the ``expectation`` statistic, ``MLE_expected`` and ``regularize``; theory in
M. Van den Bergh, "Maximum likelihood estimation of a multinomial distribution with
a given expectation value", cantate.be/Fishtest/support_MLE_multinomial.pdf):

* every game is one trinomial observation of the candidate's score, loss = 0,
  draw = 1/2, win = 1, with unknown probabilities (the draw rate is a nuisance
  parameter, never modelled);
* the hypotheses are about the expected score only: ``H0: E[score] = L(elo0)``
  against ``H1: E[score] = L(elo1)`` with ``L(x) = 1 / (1 + 10 ** (-x / 400))``
  (logistic Elo);
* the log-likelihood ratio is the *generalized* one: under each hypothesis the
  trinomial is replaced by its maximum-likelihood estimate subject to that
  expectation (a Lagrange multiplier ``x`` with ``q_i = p_i / (1 + x (v_i - s))``),
  so ``LLR = sum_i n_i * log(q1_i / q0_i)``;
* zero counts are replaced by 1e-3 before anything is computed (fishtest's
  ``regularize``), so the first games give finite, small LLRs.

Differences from fishtest: the multiplier is the root of a quadratic (three outcomes
make the secular equation ``sum p_i a_i / (1 + x a_i) = 0`` a quadratic in ``x``),
solved in closed form and vectorised over numpy arrays, instead of ``brentq``; and
the test is read after every batch of games, not only at fishtest's batch ends.
Wald's bounds: ``[log(beta / (1 - alpha)), log((1 - beta) / alpha)]``.

The Elo estimate is the plain fixed-sample one (mean score +/- z * its standard
error, mapped through ``L^-1``), not fishtest's sequentially corrected estimate; the
expected games to a decision use fishtest's Brownian approximation of the LLR
(``LLR_drift_variance_alt2``) and the exit time of a Brownian motion with drift.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Final

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

REGULARIZE: Final = 1e-3  # fishtest's prior mass for an outcome never seen
SCORE_CLIP: Final = 1e-3  # scores are kept in [1e-3, 1 - 1e-3] (+/- 1200 Elo) for Elo estimates
CONFIDENCE: Final = 0.95
Z: Final = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)


def score_of_elo(elo: float) -> float:
    """Expected score of a player ``elo`` logistic-Elo points stronger."""
    return 1.0 / (1.0 + math.pow(10.0, -elo / 400.0))


def elo_of_score(score: float) -> float:
    """Logistic Elo of an expected score (clipped to +/- 1200 Elo)."""
    s = min(max(score, SCORE_CLIP), 1.0 - SCORE_CLIP)
    return -400.0 * math.log10(1.0 / s - 1.0)


def wald_bounds(alpha: float, beta: float) -> tuple[float, float]:
    """(lower, upper): reject H1 below ``lower``, accept it above ``upper``."""
    return math.log(beta / (1.0 - alpha)), math.log((1.0 - beta) / alpha)


def _regularized(wins: npt.ArrayLike, draws: npt.ArrayLike, losses: npt.ArrayLike) -> tuple[Array, ...]:
    c = [np.asarray(v, dtype=np.float64) for v in (losses, draws, wins)]
    return tuple(np.where(x > 0, x, REGULARIZE) for x in c)


def _multiplier(p: tuple[Array, Array, Array], s: float) -> Array:
    """The root ``x`` of ``sum p_i a_i / (1 + x a_i) = 0`` with ``a = (0, 1/2, 1) - s``.

    Multiplying by ``prod_j (1 + x a_j)`` (positive on the admissible interval
    ``(-1 / (1 - s), 1 / s)``) leaves ``A x^2 + B x + C = 0``; the left side is
    strictly decreasing on that interval, so exactly one of the two roots lies in it.
    """
    a = (-s, 0.5 - s, 1.0 - s)
    c = p[0] * a[0] + p[1] * a[1] + p[2] * a[2]
    b = p[0] * a[0] * (a[1] + a[2]) + p[1] * a[1] * (a[0] + a[2]) + p[2] * a[2] * (a[0] + a[1])
    quad = a[0] * a[1] * a[2]
    with np.errstate(all="ignore"):
        root = np.sqrt(np.maximum(b * b - 4.0 * quad * c, 0.0))
        q = -0.5 * (b + np.where(b >= 0, root, -root))
        small = np.where(q != 0, c / q, 0.0)  # the stable root; 0 when b = c = 0
        big = q / quad if quad != 0 else np.full_like(q, np.inf)
    lo, hi = -1.0 / a[2], -1.0 / a[0]
    ok = (small > lo) & (small < hi)
    return np.where(ok, small, big)


def llr_array(
    wins: npt.ArrayLike, draws: npt.ArrayLike, losses: npt.ArrayLike, elo0: float, elo1: float
) -> Array:
    """Generalized log-likelihood ratio of H1 (``elo1``) over H0 (``elo0``), elementwise."""
    n = _regularized(wins, draws, losses)
    total = n[0] + n[1] + n[2]
    p = (n[0] / total, n[1] / total, n[2] / total)
    out = np.zeros_like(total)
    for s, sign in ((score_of_elo(elo0), 1.0), (score_of_elo(elo1), -1.0)):
        x = _multiplier(p, s)
        for i, v in enumerate((0.0, 0.5, 1.0)):
            # log(q1_i / q0_i) = log(1 + x0 a0_i) - log(1 + x1 a1_i)
            out += sign * n[i] * np.log1p(x * (v - s))
    return out


def llr(wins: int, draws: int, losses: int, elo0: float, elo1: float) -> float:
    """:func:`llr_array` for one test."""
    return float(llr_array(wins, draws, losses, elo0, elo1))


def score_moments(wins: int, draws: int, losses: int) -> tuple[float, float, float]:
    """(regularized game count, mean score, per-game score variance)."""
    nl, nd, nw = (float(v) if v > 0 else REGULARIZE for v in (losses, draws, wins))
    n = nl + nd + nw
    mean = (0.5 * nd + nw) / n
    var = (nl * mean**2 + nd * (0.5 - mean) ** 2 + nw * (1.0 - mean) ** 2) / n
    return n, mean, var


def elo_interval(wins: int, draws: int, losses: int) -> tuple[float, float, float]:
    """(Elo estimate, lower, upper) of the candidate over production, at :data:`CONFIDENCE`."""
    n, mean, var = score_moments(wins, draws, losses)
    half = Z * math.sqrt(var / n)
    return elo_of_score(mean), elo_of_score(mean - half), elo_of_score(mean + half)


def llr_drift(mean: float, var: float, elo0: float, elo1: float) -> tuple[float, float]:
    """(drift, variance) of the LLR per game when the true score has ``mean`` and ``var``.

    fishtest's ``LLR_drift_variance_alt2``: the LLR as a Brownian motion.
    """
    s0, s1 = score_of_elo(elo0), score_of_elo(elo1)
    return (mean - (s0 + s1) / 2.0) * (s1 - s0) / var, (s1 - s0) ** 2 / var


def expected_exit_time(x: float, lower: float, upper: float, drift: float, variance: float) -> float:
    """Expected time for a Brownian motion (``drift``, ``variance`` per step) at ``x`` to leave
    ``(lower, upper)``; 0 outside it."""
    if not lower < x < upper:
        return 0.0
    width = upper - lower
    k = 2.0 * drift / variance
    if abs(k * width) < 1e-6:  # no drift to speak of (and the formula below would cancel)
        return (x - lower) * (upper - x) / variance
    # P(lower first) = (e^{-k upper} - e^{-k x}) / (e^{-k upper} - e^{-k lower}), written so no
    # exponent is positive whatever the sign of k.
    if k > 0:
        p_lower = math.exp(-k * (x - lower)) * math.expm1(-k * (upper - x)) / math.expm1(-k * width)
    else:
        p_lower = math.expm1(-k * (x - upper)) / math.expm1(k * width)
    end = lower * p_lower + upper * (1.0 - p_lower)
    return max(0.0, (end - x) / drift)
