"""Benchmark: one full decision evaluation (weights + triggers + health) for all 12 configs.

Each config has 1,000 recorded results inside the window. Baseline (same run):
a naive recompute that reads the raw history from the SQLite store every
evaluation and loops over it in Python. Prints one JSON object.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from daemon.decide.curriculum import CurriculumFeedback
from daemon.decide.health import TrainingHealthMonitor
from daemon.decide.triggers import TrainingTriggers
from daemon.keys import ALL_CONFIG_KEYS

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RESULTS = 1000


def _populate(cf: CurriculumFeedback, hm: TrainingHealthMonitor) -> None:
    for i, key in enumerate(ALL_CONFIG_KEYS):
        rows = [
            (
                1 if (g * 7 + i) % 5 < 3 else -1 if g % 11 else 0,
                1500.0 - g * 0.01 * i,
                T0 - timedelta(seconds=1.7 * (RESULTS - g)),
            )
            for g in range(RESULTS)
        ]
        cf.record_games(key, rows)
        if i % 3:
            cf.record_training(key, now=T0 - timedelta(hours=i), model_count=i)
        hm.record_training_complete(key, success=i % 4 != 0, now=T0 - timedelta(hours=i))
        hm.record_data_update(key, game_count=1000 * i, now=T0 - timedelta(hours=i))
    hm.record_training_start("square8_2p", now=T0 - timedelta(hours=1), run_id="r")


def evaluate(cf: CurriculumFeedback, tr: TrainingTriggers, hm: TrainingHealthMonitor, now: datetime) -> Any:
    weights = cf.get_curriculum_weights(now=now)
    for i, key in enumerate(ALL_CONFIG_KEYS):
        m = cf.get_config_metrics(key, now=now)
        tr.update_config_state(
            key,
            games_count=1000 * i,
            new_games=70 * i,
            win_rate=m.win_rate,
            model_count=m.model_count,
            last_training_time=m.last_training_time,
            curriculum_weight=weights[key],
        )
    queue = tr.get_training_queue(now=now)
    decisions = {k: tr.should_train(k, now=now) for k in ALL_CONFIG_KEYS}
    hm.evaluate(now=now)
    return weights, queue, decisions, hm.get_health_status(now=now)


def naive(db: Path, now: datetime) -> dict[str, float]:
    """Recompute the weights from the raw rows every time (what a simple version would do)."""
    conn = sqlite3.connect(db)
    try:
        out = {}
        lo = now.timestamp() - 1800
        for key in ALL_CONFIG_KEYS:
            rows = conn.execute(
                "SELECT ts, winner, elo FROM curriculum_results WHERE config=? ORDER BY ts", (key,)
            ).fetchall()
            recent = [r for r in rows if lo <= r[0] <= now.timestamp()]
            n = len(recent)
            score = sum(1.0 if r[1] == 1 else 0.5 if r[1] == 0 else 0.0 for r in recent)
            wr = score / n if n >= 5 else None
            ts = [(r[0] - recent[0][0]) / 3600 for r in recent]
            es = [r[2] for r in recent]
            mt, me = statistics.fmean(ts), statistics.fmean(es)
            den = sum((t - mt) ** 2 for t in ts)
            slope = sum((t - mt) * (e - me) for t, e in zip(ts, es, strict=True)) / den if den else 0.0
            tr = conn.execute(
                "SELECT ts, model_count FROM curriculum_training WHERE config=?", (key,)
            ).fetchone()
            w = 1.0 + (0.4 if wr is not None and wr < 0.55 else 0) + (0.5 if not tr or not tr[1] else 0)
            w += (0.2 if slope < -10 else 0) + (-0.3 if wr is not None and wr > 0.7 else 0)
            w += 0.1 if tr and tr[0] and now.timestamp() - tr[0] > 6 * 3600 else 0
            out[key] = min(2.0, max(0.5, w))
        return out
    finally:
        conn.close()


def _time(fn: Any, reps: int) -> float:
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> int:
    # Scripts may configure logging: keep stdout for the one JSON object.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "decide.db"
        with CurriculumFeedback(db) as cf, TrainingHealthMonitor(db) as hm:
            _populate(cf, hm)
            tr = TrainingTriggers()
            now = T0 + timedelta(seconds=1)
            evaluate(cf, tr, hm, now)  # warm-up: state settles, alerts raised once
            ours = _time(lambda: evaluate(cf, tr, hm, now), 200)
            base = _time(lambda: naive(db, now), 20)
            ws = cf.get_curriculum_weights(now=now)
            nw = naive(db, now)
            agree = all(abs(ws[k] - nw[k]) < 1e-9 for k in ALL_CONFIG_KEYS)
    print(
        json.dumps(
            {
                "bench": "decide_eval",
                "configs": len(ALL_CONFIG_KEYS),
                "results_per_config": RESULTS,
                "full_evaluation_ms": round(ours * 1000, 3),
                "baseline_naive_recompute_ms": round(base * 1000, 3),
                "speedup_vs_baseline": round(base / ours, 2),
                "target_ms": 5.0,
                "meets_target": ours * 1000 < 5.0,
                "weights_agree_with_baseline": agree,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
