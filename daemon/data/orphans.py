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

# Move rows new since the last pass, (:lo, :hi], that belong to a games row new since the last
# pass, (:glo, :ghi], counted along the game_id index (no move row read). When they are all of
# the rowids in the range, no new move row is an orphan.
NEW_MOVES_OF_NEW_GAMES = (
    "SELECT count(*) FROM game_moves WHERE game_id IN"
    " (SELECT game_id FROM games WHERE rowid > :glo AND rowid <= :ghi)"
    " AND rowid > :lo AND rowid <= :hi"
)
# DISTINCT first, then one games lookup per game (not per move row).
NEW_MOVES_BY_SCAN = (
    "SELECT gid FROM (SELECT DISTINCT game_id AS gid FROM game_moves WHERE rowid > ? AND rowid <= ?)"
    " WHERE NOT EXISTS (SELECT 1 FROM games g WHERE g.game_id = gid)"
)


def new_orphans(
    conn: sqlite3.Connection, moves: tuple[int, int], games: tuple[int, int], by_index: bool
) -> list[Any]:
    """game_ids (as read) of move rows in the rowid range ``moves`` that have no ``games`` row.

    ``games``: the rowid range of the games rows new in the same pass. Usually every new move
    row is a new game's (a writer inserts a game with its moves): with an index leading with
    ``game_moves.game_id`` that is proved by one count over the index, and no move row is read.
    Otherwise (moves of older games, gaps from deleted rows, no index) the range is scanned.
    """
    lo, hi = moves
    if by_index and games[1] > games[0]:
        args = {"lo": lo, "hi": hi, "glo": games[0], "ghi": games[1]}
        if conn.execute(NEW_MOVES_OF_NEW_GAMES, args).fetchone()[0] == hi - lo:
            return []
    return [gid for (gid,) in conn.execute(NEW_MOVES_BY_SCAN, (lo, hi))]


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
