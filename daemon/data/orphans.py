"""Orphan moves: ``game_moves`` rows whose game has no ``games`` row, and their config.

An orphan counts under its config when its initial state or player rows tell the board
and player count (DESIGN 8: the real sample's two orphans are square8_2p games).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from daemon.data.usable import config_of, text

# Distinct game_ids of game_moves without a games row, as a loose index scan.
ORPHANS_BY_INDEX = (
    "WITH RECURSIVE ids(gid) AS (SELECT min(game_id) FROM game_moves UNION ALL"
    " SELECT (SELECT m.game_id FROM game_moves m WHERE m.game_id > ids.gid ORDER BY m.game_id LIMIT 1)"
    " FROM ids WHERE ids.gid IS NOT NULL)"
    " SELECT gid FROM ids WHERE gid IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM games g WHERE g.game_id = ids.gid)"
)


def leads_an_index(conn: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether some index of ``table`` starts with ``column`` (so seeks by it are cheap)."""
    for row in conn.execute(f"PRAGMA index_list({table})").fetchall():
        quoted = '"' + (text(row[1]) or "").replace('"', '""') + '"'
        cols = conn.execute(f"PRAGMA index_info({quoted})").fetchall()
        if cols and text(cols[0][2]) == column:
            return True
    return False


def orphan_config(conn: sqlite3.Connection, tables: frozenset[str], game_id: Any) -> str | None:
    """Board and player count of an orphan (``game_id`` as read) from its initial state or player rows."""
    board: Any = None
    players: Any = None
    if "game_initial_state" in tables:
        row = conn.execute(
            "SELECT initial_state_json, compressed FROM game_initial_state WHERE game_id=CAST(? AS TEXT)",
            (game_id,),
        ).fetchone()
        if row and not row[1]:
            try:
                state = orjson.loads(row[0])
                board = state.get("boardType") or (state.get("board") or {}).get("type")
                if isinstance(state.get("players"), list):
                    players = len(state["players"])
            except (orjson.JSONDecodeError, AttributeError, TypeError):  # depth past orjson's limit too
                pass
    if "game_players" in tables:
        n = conn.execute(
            "SELECT count(*) FROM game_players WHERE game_id=CAST(? AS TEXT)", (game_id,)
        ).fetchone()[0]
        players = n or players
    return config_of(board, players)
