"""Benchmark: one promotion tick for all 12 configs, each with 1,000 new evaluation results.

Ours: fold the tick's new results (one outcome per game) into each config's count
state and decide all 12 at once (``decide_all``; also timed: one ``decide`` per
config). Baseline (same run): recompute each config's counts from all its stored
results (``--stored`` earlier results plus the new ones) and decide, as a version
that keeps the raw results would. All three must give the same decisions. Prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from daemon.decide.promotion import PromotionDecision, PromotionParams, PromotionState, decide, decide_all
from daemon.keys import ALL_CONFIG_KEYS

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TARGET_MS = 5.0


def _outcomes(rng: np.random.Generator, n: int) -> list[int]:
    return [int(x) for x in rng.choice([1, 0, -1], size=n, p=[0.45, 0.15, 0.40])]


def _time(fn: Callable[[], Any], reps: int) -> float:
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench promotion_update")
    ap.add_argument("--new", type=int, default=1000, help="new results per config per tick")
    ap.add_argument("--stored", type=int, default=10000, help="results already stored per config")
    ap.add_argument("--reps", type=int, default=200)
    a = ap.parse_args()
    rng = np.random.default_rng(21)
    params = PromotionParams.default()
    stored = {k: _outcomes(rng, a.stored) for k in ALL_CONFIG_KEYS}
    new = {k: _outcomes(rng, a.new) for k in ALL_CONFIG_KEYS}
    fresh = {k: PromotionState(k, f"{k}-v2", f"{k}-v1", NOW.timestamp() - 3600) for k in ALL_CONFIG_KEYS}
    states = {k: fresh[k].add_outcomes(stored[k]) for k in ALL_CONFIG_KEYS}
    everything = {k: stored[k] + new[k] for k in ALL_CONFIG_KEYS}

    def tick() -> dict[str, PromotionDecision]:
        return decide_all({k: states[k].add_outcomes(new[k]) for k in ALL_CONFIG_KEYS}, params, NOW)

    def tick_one_by_one() -> dict[str, PromotionDecision]:
        return {k: decide(states[k].add_outcomes(new[k]), params, NOW) for k in ALL_CONFIG_KEYS}

    def recompute() -> dict[str, PromotionDecision]:
        return {k: decide(fresh[k].add_outcomes(everything[k]), params, NOW) for k in ALL_CONFIG_KEYS}

    ours_s = _time(tick, a.reps)
    one_s = _time(tick_one_by_one, a.reps)
    decide_s = _time(lambda: decide_all(states, params, NOW), a.reps)
    base_s = _time(recompute, max(5, a.reps // 10))
    agree = tick() == recompute() == tick_one_by_one()
    print(
        json.dumps(
            {
                "bench": "promotion_update",
                "configs": len(ALL_CONFIG_KEYS),
                "new_results_per_config": a.new,
                "stored_results_per_config": a.stored,
                "tick_ms": round(ours_s * 1000, 3),
                "tick_one_decide_per_config_ms": round(one_s * 1000, 3),
                "decide_all_only_ms": round(decide_s * 1000, 3),
                "baseline_recompute_ms": round(base_s * 1000, 3),
                "ratio_recompute_over_tick": round(base_s / ours_s, 2),
                "target_ms": TARGET_MS,
                "meets_target": ours_s * 1000 < TARGET_MS,
                "decisions_agree_with_baseline": agree,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
