"""Refresh after +100 games on a 1,000,000-game database vs a naive exact count of it.

``python -m bench gamedb_refresh_1m [--games 1000000] [--rounds 20]`` prints one JSON object.
The database (:mod:`bench.dbcache`, a private copy of the cached file): ``--games`` header
rows over the 12 configs (~1 per mille pending, as upstream's), 240 with moves. A warm
:class:`~daemon.data.gamedb.GameDB` (as the poll keeps it) is refreshed after a writer
process-like connection commits 100 games with their moves, one transaction each (WAL,
autocheckpoint on, so the main file changes under the reader every few rounds).

Figures: median and max refresh (ms) over ``--rounds``; the naive exact count of all 12
configs (``COUNT(*) ... WHERE usable`` per config, warm) as the same-run baseline; the
machine load (``os.getloadavg``) before and after. Target: median < 10 ms.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.dbcache import header_db, working_copy
from daemon.data.gamedb import GameDB
from daemon.data.usable import usable_sql
from daemon.keys import ALL_CONFIG_KEYS, board_aliases, parse_config_key
from daemon.selfplay_sim import GameFactory, connect_writer, insert_game

NEW_PER_ROUND = 100


def naive_ms(db: Path, repeats: int = 3) -> tuple[float, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:

        def once() -> int:
            total = 0
            for key in ALL_CONFIG_KEYS:
                board, n = parse_config_key(key)
                aliases = board_aliases(board)
                sql = f"SELECT COUNT(*) FROM games WHERE {usable_sql(aliases)}"
                total += conn.execute(sql, (*aliases, n)).fetchone()[0]
            return total

        count = once()
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            once()
            runs.append((time.perf_counter() - t) * 1e3)
        return statistics.median(runs), count
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--games", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=20)
    a = p.parse_args(argv)
    t = time.perf_counter()
    src = header_db(a.games)
    build_s = time.perf_counter() - t
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_refresh_1m_") as d:
        path = working_copy(src, Path(d) / "games.db")
        db = GameDB(path)
        writer = connect_writer(path)
        try:
            t = time.perf_counter()
            first = db.refresh()
            first_ms = (time.perf_counter() - t) * 1e3
            pending = sum(c.skipped.active for c in first.configs.values())
            t = time.perf_counter()
            db.refresh()
            no_change_us = (time.perf_counter() - t) * 1e6
            factories = [GameFactory(k, 1000 + i, source="bench-new") for i, k in enumerate(ALL_CONFIG_KEYS)]
            times: list[float] = []
            cpu: list[float] = []  # this thread's CPU time: the wall time less waiting for a core
            written = 0
            for _ in range(a.rounds):
                for _ in range(NEW_PER_ROUND):
                    insert_game(writer, factories[written % len(factories)].make())
                    written += 1
                t, c = time.perf_counter(), time.thread_time()
                snap = db.refresh()
                times.append((time.perf_counter() - t) * 1e3)
                cpu.append((time.thread_time() - c) * 1e3)
            assert snap.max_rowid == first.max_rowid + written, "refresh missed rows"
            usable = sum(c.usable_games for c in snap.configs.values())
        finally:
            writer.close()
            db.close()
        naive, count = naive_ms(path)
        assert count == usable, (count, usable)
    med = statistics.median(times)
    result: dict[str, Any] = {
        "bench": "gamedb_refresh_1m",
        "games": a.games + written,
        "pending_games": pending,
        "build_or_cache_seconds": round(build_s, 2),
        "first_full_scan_ms": round(first_ms, 1),
        "no_change_refresh_us": round(no_change_us, 1),
        "rounds": a.rounds,
        "refresh_after_100_median_ms": round(med, 3),
        "refresh_after_100_max_ms": round(max(times), 3),
        "refresh_after_100_ms": [round(x, 2) for x in times],
        "refresh_after_100_cpu_median_ms": round(statistics.median(cpu), 3),
        "refresh_after_100_cpu_ms": [round(x, 2) for x in cpu],
        "naive_count_12_configs_ms": round(naive, 1),
        "ratio_naive_over_refresh": round(naive / med, 1),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "targets": {"refresh_after_100_median_ms": "< 10"},
        "targets_met": med < 10,
    }
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
