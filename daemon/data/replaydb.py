"""The GameReplayDB schema as upstream self-play writers create it, and one game's insert.

The daemon never writes a game database it reads; this is the writer side the synthetic
self-play (:mod:`daemon.selfplay_sim`, the demo and the tests) uses: schema v6's tables, plus
the v18 columns when asked, WAL, one transaction per game.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from daemon import sqlite

SCHEMA_V6 = """
CREATE TABLE IF NOT EXISTS schema_metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS games (
    game_id TEXT PRIMARY KEY, board_type TEXT NOT NULL, num_players INTEGER NOT NULL,
    rng_seed INTEGER, created_at TEXT NOT NULL, completed_at TEXT, game_status TEXT NOT NULL,
    winner INTEGER, termination_reason TEXT, total_moves INTEGER NOT NULL,
    total_turns INTEGER NOT NULL, duration_ms INTEGER, source TEXT, schema_version INTEGER NOT NULL,
    time_control_type TEXT DEFAULT 'none', initial_time_ms INTEGER, time_increment_ms INTEGER,
    metadata_json TEXT{games_extra}
);
CREATE INDEX IF NOT EXISTS idx_games_board_type ON games(board_type);
CREATE TABLE IF NOT EXISTS game_players (
    game_id TEXT NOT NULL, player_number INTEGER NOT NULL, player_type TEXT NOT NULL,
    ai_type TEXT, ai_difficulty INTEGER, ai_profile_id TEXT, final_eliminated_rings INTEGER,
    final_territory_spaces INTEGER, final_rings_in_hand INTEGER,
    PRIMARY KEY (game_id, player_number)
);
CREATE TABLE IF NOT EXISTS game_initial_state (
    game_id TEXT PRIMARY KEY, initial_state_json TEXT NOT NULL, compressed INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS game_moves (
    game_id TEXT NOT NULL, move_number INTEGER NOT NULL, turn_number INTEGER NOT NULL,
    player INTEGER NOT NULL, phase TEXT NOT NULL, move_type TEXT NOT NULL, move_json TEXT NOT NULL,
    timestamp TEXT, think_time_ms INTEGER, time_remaining_ms INTEGER, engine_eval REAL,
    engine_eval_type TEXT, engine_depth INTEGER, engine_nodes INTEGER, engine_pv TEXT,
    engine_time_ms INTEGER{moves_extra},
    PRIMARY KEY (game_id, move_number)
);
"""
V18_GAMES = (
    ",\n    quality_score REAL, quality_category TEXT, engine_mode TEXT, parity_status TEXT,"
    "\n    opponent_type TEXT, opponent_model_id TEXT"
)
V18_MOVES = ",\n    move_probs BLOB, search_stats_json TEXT"


def create_schema(conn: sqlite3.Connection, schema_version: int = 18) -> None:
    """Create the GameReplayDB tables (v6 layout, plus v18 columns when asked)."""
    v18 = schema_version >= 18
    script = SCHEMA_V6.format(games_extra=V18_GAMES if v18 else "", moves_extra=V18_MOVES if v18 else "")
    conn.executescript(
        f"BEGIN IMMEDIATE;{script}"
        "INSERT OR REPLACE INTO schema_metadata(key, value)"
        f" VALUES ('schema_version', '{int(schema_version)}');"
        "COMMIT;"
    )


def connect_writer(db_path: Path, schema_version: int = 18) -> sqlite3.Connection:
    """Open ``db_path`` for writing in WAL mode, creating the schema if needed."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: SelfPlaySim drives it from asyncio.to_thread workers
    # (any pool thread, one call at a time).
    conn = sqlite.connect(db_path, busy_timeout=30.0, synchronous="NORMAL")
    has_games = conn.execute("SELECT 1 FROM sqlite_master WHERE name='games'").fetchone()
    if not has_games:
        create_schema(conn, schema_version)
    return conn


def insert_game(conn: sqlite3.Connection, rows: dict[str, Any], schema_version: int = 18) -> None:
    """Insert one game in one transaction (like upstream writers)."""
    g = rows["game"]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO games(game_id, board_type, num_players, rng_seed, created_at, completed_at,"
            " game_status, winner, termination_reason, total_moves, total_turns, duration_ms, source,"
            " schema_version, metadata_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                g["game_id"],
                g["board_type"],
                g["num_players"],
                None,
                g["created_at"],
                g["completed_at"],
                g["game_status"],
                g["winner"],
                g["termination_reason"],
                g["total_moves"],
                g["total_turns"],
                None,
                g["source"],
                schema_version,
                g["metadata_json"],
            ),
        )
        conn.executemany("INSERT INTO game_players VALUES (?,?,?,?,?,?,?,?,?)", rows["players"])
        conn.execute(
            "INSERT INTO game_initial_state(game_id, initial_state_json) VALUES (?,?)",
            (g["game_id"], rows["initial"]),
        )
        conn.executemany(
            "INSERT INTO game_moves(game_id, move_number, turn_number, player, phase, move_type, move_json)"
            " VALUES (?,?,?,?,?,?,?)",
            [(g["game_id"], n, t, p, ph, mt, mj.decode()) for n, t, p, ph, mt, mj in rows["moves"]],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
