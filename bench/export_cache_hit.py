"""Cache-hit ``export`` on a header-heavy database vs a naive exact count of the same database.

``python -m bench export_cache_hit [--games 200000] [--repeats 20]`` prints one JSON object.
The database (:mod:`bench.dbcache`): ``--games`` games rows over 12 configs, 240 of them
with moves. After one real export of ``square8_2p`` (and the one full-check hit that notes
the fingerprints a fresh reader's ``-wal``/``-shm`` give), it times:

* ``cache_hit``: ``run_export`` in a fresh state each call (the CLI's path: no warm snapshot),
  median of ``--repeats``;
* ``service_hit``: the service's export (:class:`~daemon.export.exporter.Exporter` on the
  poll's warm :class:`~daemon.data.sources.GameSources`);
* ``full_snapshot``: the fresh full snapshot every hit used to take (context);
* ``naive``: ``SELECT COUNT(*) FROM games WHERE <usable rule of square8_2p>``, warm, median.

Target: cache_hit <= 0.05 x naive.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.dbcache import header_db, working_copy
from daemon.data.sources import GameSources, snapshot_readable
from daemon.data.usable import usable_sql
from daemon.export.exporter import Exporter
from daemon.export.job import run_export
from daemon.keys import board_aliases, parse_config_key
from daemon.logs import configure_logging
from daemon.selfplay_sim import GameFactory, connect_writer, insert_game
from daemon.settings import Settings, settings_from_mapping

KEY = "square8_2p"


def _ms(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def settings_for(data: Path, db: Path) -> Settings:
    return settings_from_mapping(
        {"data_dir": str(data), "game_dbs": [str(db)], "configs": [KEY], "export": {"min_free_bytes": 0}}
    )


def naive_ms(db: Path, repeats: int) -> tuple[float, int]:
    import sqlite3

    board, n = parse_config_key(KEY)
    aliases = board_aliases(board)
    sql = f"SELECT COUNT(*) FROM games WHERE {usable_sql(aliases)}"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        count = conn.execute(sql, (*aliases, n)).fetchone()[0]  # warm the page cache
        runs = [_ms(lambda: conn.execute(sql, (*aliases, n)).fetchone()) for _ in range(repeats)]
        return statistics.median(runs), count
    finally:
        conn.close()


def service_hits(tmp: Path, src: Path, repeats: int) -> tuple[float, float]:
    """The service's hit: idle sources, and with a writer committing games of another config.

    While a writer commits, every fingerprint differs and the hit is the full check on the
    poll's warm snapshot (an incremental refresh of the rows new since the last one).
    """
    db = working_copy(src, tmp / "service.db")
    s = settings_for(tmp / "svc", db)
    sources = GameSources(s.game_dbs, s.configs)
    writer = connect_writer(db)
    try:
        sources.poll()
        exporter = Exporter(s, sources)
        exporter.export(KEY)
        exporter.export(KEY)
        idle = statistics.median(_ms(lambda: exporter.export(KEY)) for _ in range(repeats))
        other = GameFactory("hex8_2p", 5, source="bench-new")
        busy = []
        for _ in range(repeats):
            insert_game(writer, other.make())
            t = time.perf_counter()
            r = exporter.export(KEY)
            busy.append((time.perf_counter() - t) * 1e3)
            assert r.cache_hit, r.reason
        return idle, statistics.median(busy)
    finally:
        writer.close()
        sources.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--games", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args(argv)
    configure_logging("WARNING", json=True)
    t = time.perf_counter()
    db = header_db(a.games)
    build_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="bench_cache_hit_") as d:
        s = settings_for(Path(d), db)
        t = time.perf_counter()
        first = run_export(s, KEY, force=True)
        export_s = time.perf_counter() - t
        settle = run_export(s, KEY)  # may be the full-check hit that notes the fingerprints
        hits, reasons = [], set()
        for _ in range(a.repeats):
            t = time.perf_counter()
            r = run_export(s, KEY)
            hits.append((time.perf_counter() - t) * 1e3)
            reasons.add(r.reason.split(" since ")[0] if r.cache_hit else f"MISS: {r.reason}")
        service, busy = service_hits(Path(d), db, a.repeats)
        full = statistics.median(_ms(lambda: snapshot_readable([db])) for _ in range(3))
        naive, count = naive_ms(db, a.repeats)
    hit = statistics.median(hits)
    result = {
        "bench": "export_cache_hit",
        "games": a.games,
        "usable_games_of_config": count,
        "exported_games": first.games,
        "samples": first.samples,
        "db_bytes": db.stat().st_size,
        "build_or_cache_seconds": round(build_s, 2),
        "first_export_seconds": round(export_s, 2),
        "settle_reason": settle.reason.split(" since ")[0],
        "cache_hit_ms": round(hit, 3),
        "cache_hit_max_ms": round(max(hits), 3),
        "hit_reasons": sorted(reasons),
        "service_hit_ms": round(service, 3),
        "service_hit_while_writing_ms": round(busy, 3),
        "full_snapshot_ms": round(full, 2),
        "naive_count_ms": round(naive, 2),
        "ratio_cache_hit_to_naive": round(hit / naive, 4),
        "ratio_service_hit_to_naive": round(service / naive, 4),
        "ratio_service_hit_while_writing_to_naive": round(busy / naive, 4),
        "ratio_full_snapshot_to_naive": round(full / naive, 2),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "targets": {"ratio_cache_hit_to_naive": "<= 0.05"},
        "targets_met": hit / naive <= 0.05 and all(not x.startswith("MISS") for x in reasons),
    }
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
