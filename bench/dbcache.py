"""Large header-heavy game databases for benches, built once by bulk SQL and cached under /tmp.

``header_db(games, ...)`` returns a v18 GameReplayDB of ``games`` ``games`` rows spread over
the 12 configs (one recursive-CTE ``INSERT ... SELECT``, ~1 s per 100K rows), of which only
``with_moves`` games (written by :mod:`daemon.selfplay_sim`) have move rows: most upstream
rows the poll counts never reach the export. The file is cached as
``/tmp/ringrift-bench-dbs/<sha of the parameters>.db`` (never in the repository); a bench
that writes to it works on a copy (:func:`working_copy`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

from daemon.keys import ALL_CONFIG_KEYS, parse_config_key
from daemon.selfplay_sim import GameFactory, connect_writer, insert_game

CACHE_DIR = Path("/tmp/ringrift-bench-dbs")
BUILD_VERSION = 1  # bump when the generated content changes


def _configs_sql() -> str:
    rows = []
    for i, key in enumerate(ALL_CONFIG_KEYS):
        board, n = parse_config_key(key)
        rows.append(f"({i}, '{board}', {n})")
    return "cfg(i, board, players) AS (VALUES " + ", ".join(rows) + ")"


def _build(path: Path, games: int, pending_per_mille: int, with_moves: int) -> None:
    conn = connect_writer(path)
    try:
        conn.execute("PRAGMA journal_mode=OFF")  # a fresh file: nothing to recover
        conn.execute("PRAGMA synchronous=OFF")
        # Status by a hash of the row number: pending per mille, else 2% abandoned, 2% draws.
        p = int(pending_per_mille)
        conn.execute(
            "WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < ?),"
            f" {_configs_sql()}"
            " INSERT INTO games(game_id, board_type, num_players, created_at, game_status, winner,"
            " total_moves, total_turns, source, schema_version)"
            " SELECT printf('bulk-%010d', x), cfg.board, cfg.players,"
            " printf('2025-12-01T%02d:%02d:%02d+00:00', (x / 3600) % 24, (x / 60) % 60, x % 60),"
            f" CASE WHEN (x * 7919) % 1000 < {p} THEN 'active'"
            f" WHEN (x * 7919) % 1000 < {p + 20} THEN 'abandoned' ELSE 'completed' END,"
            f" CASE WHEN (x * 7919) % 1000 < {p + 40} THEN NULL ELSE 1 + x % cfg.players END,"
            " 60, 30, 'bench', 18"
            f" FROM seq JOIN cfg ON cfg.i = x % {len(ALL_CONFIG_KEYS)}",
            (games - with_moves,),
        )
        conn.commit()
        conn.execute("PRAGMA journal_mode=WAL")
        factories = [GameFactory(k, 7 + i, source="bench") for i, k in enumerate(ALL_CONFIG_KEYS)]
        for i in range(with_moves):
            insert_game(conn, factories[i % len(factories)].make())
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def header_db(games: int, *, pending_per_mille: int = 1, with_moves: int = 240) -> Path:
    """The cached database for these parameters (built on first use)."""
    params = {"v": BUILD_VERSION, "games": games, "pending": pending_per_mille, "with_moves": with_moves}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"headers-{games}-{digest}.db"
    if path.exists():
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for side in ("", "-wal", "-shm"):
        Path(f"{tmp}{side}").unlink(missing_ok=True)
    _build(tmp, games, pending_per_mille, with_moves)
    os.replace(tmp, path)
    return path


def working_copy(src: Path, dest: Path) -> Path:
    """A private copy of a cached database (a bench that appends must not change the cache)."""
    shutil.copyfile(src, dest)
    return dest


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")]


def _replicate(conn: sqlite3.Connection, copies: int) -> None:
    """Every table's rows ``copies`` more times, game ids suffixed ``-N`` (one INSERT ... SELECT each)."""
    seq = "WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < ?)"
    for table in ("games", "game_players", "game_initial_state", "game_moves"):
        cols = _columns(conn, table)
        sel = ", ".join("t.game_id || '-' || x" if c == "game_id" else f"t.{c}" for c in cols)
        conn.execute(
            f"{seq} INSERT INTO {table}({', '.join(cols)}) SELECT {sel} FROM seq, {table} t"
            " ORDER BY x, t.rowid",
            (copies,),
        )


def moves_db(games: int, key: str = "square8_2p", *, seed_games: int = 200) -> Path:
    """A cached database of about ``games`` usable ``key`` games with their moves.

    ``seed_games`` real games (:mod:`daemon.selfplay_sim`) are copied under new game ids
    by bulk SQL until there are ``games``.
    """
    params = {"v": BUILD_VERSION, "kind": "moves", "games": games, "key": key, "seed": seed_games}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = CACHE_DIR / f"moves-{key}-{games}-{digest}.db"
    if path.exists():
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    for side in ("", "-wal", "-shm"):
        Path(f"{tmp}{side}").unlink(missing_ok=True)
    conn = connect_writer(tmp)
    try:
        factory = GameFactory(key, 11, source="bench")
        for _ in range(seed_games):
            insert_game(conn, factory.make("completed"))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        _replicate(conn, max(0, -(-games // seed_games) - 1))
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    os.replace(tmp, path)
    return path
