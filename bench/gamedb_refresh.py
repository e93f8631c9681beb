"""Snapshot refresh of all 12 configs vs. the naive per-config COUNT(*), same DB, same run.

Builds (in a temp dir) a v18 GameReplayDB of ``GAMES`` games spread over the 12
configs (games rows bulk-inserted; moves only for a small subset, since the
refresh cost does not depend on old moves), then measures:

* ``no_change``: ``GameDB.refresh()`` when nothing changed (median of many calls);
* ``incremental_100``: ``refresh()`` after another connection added 100 games
  with their moves (median over ``ROUNDS`` rounds);
* ``naive``: ``SELECT COUNT(*) FROM games WHERE board_type=? AND num_players=?``
  (usable filter included) for each of the 12 configs.

Targets: naive / no_change >= 100x; incremental_100 < 10 ms.
Run: ``python -m bench gamedb_refresh`` (prints one JSON object).
"""

from __future__ import annotations

import json
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daemon.data.gamedb import GameDB
from daemon.keys import ALL_CONFIG_KEYS, parse_config_key
from daemon.selfplay_sim import GameFactory, connect_writer, insert_game

GAMES = 300_000
WITH_MOVES = 240  # games (20 per config) written with their moves
NO_CHANGE_CALLS = 500
ROUNDS = 10
NEW_PER_ROUND = 100
NAIVE_REPEATS = 5
# Status mix of the bulk rows: the active share is what the pending recheck pays for.
MIX = (("completed", 0.90), ("active", 0.04), ("abandoned", 0.03), ("draw", 0.02), ("paused", 0.01))
LEGACY = {"square8": "sq8", "square19": "sq19", "hexagonal": "hex"}

NAIVE_SQL = (
    "SELECT COUNT(*) FROM games WHERE board_type=? AND num_players=?"
    " AND game_status IN ('completed', 'finished') AND winner IS NOT NULL"
)


def _rows(n: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    statuses = [s for s, _ in MIX]
    weights = [w for _, w in MIX]
    for i in range(n):
        key = ALL_CONFIG_KEYS[i % len(ALL_CONFIG_KEYS)]
        board, players = parse_config_key(key)
        if board in LEGACY and rng.random() < 0.05:
            board = LEGACY[board]
        status = rng.choices(statuses, weights)[0]
        winner = rng.randint(1, players) if status == "completed" else None
        if status == "draw":
            status = "completed"
        yield (
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            board,
            players,
            "2025-12-01T00:00:00+00:00",
            status,
            winner,
            60,
            30,
            "bench",
            18,
        )


def build_db(path: Path, games: int = GAMES, seed: int = 0) -> None:
    """Bulk-insert ``games`` rows, plus ``WITH_MOVES`` full games, into a fresh v18 DB."""
    rng = random.Random(seed)
    conn = connect_writer(path)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO games(game_id, board_type, num_players, created_at, game_status, winner,"
            " total_moves, total_turns, source, schema_version) VALUES (?,?,?,?,?,?,?,?,?,?)",
            _rows(games - WITH_MOVES, rng),
        )
        conn.execute("COMMIT")
        factories = [GameFactory(k, seed + i, source="bench") for i, k in enumerate(ALL_CONFIG_KEYS)]
        for i in range(WITH_MOVES):
            insert_game(conn, factories[i % len(factories)].make())
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def naive_counts(path: Path) -> tuple[float, dict[str, int]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        counts: dict[str, int] = {}

        def once() -> None:
            for key in ALL_CONFIG_KEYS:
                board, n = parse_config_key(key)
                counts[key] = conn.execute(NAIVE_SQL, (board, n)).fetchone()[0]

        once()  # warm the page cache like the refresh side
        return statistics.median(_timed(once) for _ in range(NAIVE_REPEATS)), counts
    finally:
        conn.close()


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-gamedb-") as tmp:
        path = Path(tmp) / "games.db"
        t0 = time.perf_counter()
        build_db(path)
        build_s = time.perf_counter() - t0

        db = GameDB(path)
        db.open()
        writer = connect_writer(path)
        try:
            first_s = _timed(db.refresh)
            snap = db.refresh()
            usable0 = sum(c.usable_games for c in snap.configs.values())
            pending = sum(c.skipped.active for c in snap.configs.values())

            no_change = statistics.median(_timed(db.refresh) for _ in range(NO_CHANGE_CALLS))

            factories = [GameFactory(k, 1000 + i, source="bench-new") for i, k in enumerate(ALL_CONFIG_KEYS)]
            inc: list[float] = []
            written = 0
            for _ in range(ROUNDS):
                for _ in range(NEW_PER_ROUND):
                    insert_game(writer, factories[written % len(factories)].make())
                    written += 1
                inc.append(_timed(db.refresh))
            snap = db.refresh()
            assert snap.max_rowid == GAMES + written, "refresh missed rows"

            naive, counts = naive_counts(path)
        finally:
            writer.close()
            db.close()

        incremental = statistics.median(inc)
        return {
            "bench": "gamedb_refresh",
            "games": GAMES + written,
            "configs": len(ALL_CONFIG_KEYS),
            "pending_active_games": pending,
            "build_seconds": round(build_s, 2),
            "first_full_scan_ms": round(first_s * 1e3, 2),
            "no_change_refresh_us": round(no_change * 1e6, 2),
            "incremental_100_ms": round(incremental * 1e3, 3),
            "incremental_100_max_ms": round(max(inc) * 1e3, 3),
            "naive_count_12_configs_ms": round(naive * 1e3, 2),
            "ratio_naive_over_no_change": round(naive / no_change, 1),
            "ratio_naive_over_incremental_100": round(naive / incremental, 1),
            "usable_games_at_start": usable0,
            "naive_usable_total": sum(counts.values()),
            "targets": {"ratio_naive_over_no_change": ">= 100", "incremental_100_ms": "< 10"},
            "targets_met": naive / no_change >= 100 and incremental * 1e3 < 10,
        }


if __name__ == "__main__":
    print(json.dumps(main()))
