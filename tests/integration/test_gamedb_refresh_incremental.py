"""An incremental refresh equals a fresh full scan: appends, orphans, pending slices, checkpoints."""

from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from daemon.data import gamedb
from daemon.data.gamedb import GameDB
from daemon.selfplay_sim import GameFactory, connect_writer, insert_game, write_games

KEY = "square8_2p"


def fresh(path: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Per-config counts and orphans of a full scan by a new reader (the reference)."""
    db = GameDB(path)
    try:
        snap = db.refresh()
    finally:
        db.close()
    return {k: (c.usable_games, c.skipped.as_dict()) for k, c in snap.configs.items()}, snap.orphans


def same(db: GameDB, path: Path) -> None:
    snap = db.refresh()
    counts, orphans = fresh(path)
    assert {k: (c.usable_games, c.skipped.as_dict()) for k, c in snap.configs.items()} == counts
    assert snap.orphans == orphans


def add_moves(conn: sqlite3.Connection, game_id: str, n: int, start: int = 0) -> None:
    conn.executemany(
        "INSERT INTO game_moves(game_id, move_number, turn_number, player, phase, move_type, move_json)"
        " VALUES (?, ?, 0, 1, 'ring_placement', 'place_ring', '{}')",
        [(game_id, start + i) for i in range(n)],
    )


def test_new_move_rows_orphans_by_count_and_by_scan(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    write_games(path, KEY, 20, seed=1)
    db = GameDB(path)
    writer = connect_writer(path)
    factory = GameFactory(KEY, 5)
    try:
        same(db, path)
        for _ in range(3):  # the usual case: every new move row is a new game's
            insert_game(writer, factory.make())
        same(db, path)
        assert db.snapshot is not None and db.snapshot.orphans == ()
        # Moves of an older game (its games row not new): the count falls short, the range is read.
        (old,) = writer.execute("SELECT game_id FROM games ORDER BY rowid LIMIT 1").fetchone()
        with writer:
            add_moves(writer, old, 2, start=1000)
        same(db, path)
        # Orphan moves between two new games, in one pass.
        insert_game(writer, factory.make())
        with writer:
            add_moves(writer, "orphan-1", 3)
        insert_game(writer, factory.make())
        same(db, path)
        assert db.snapshot is not None and "orphan-1" in db.snapshot.orphans
        # A gap in the new rowid range (a deleted move row): never mistaken for a dense range.
        insert_game(writer, factory.make())
        with writer:
            add_moves(writer, "orphan-2", 2)
            writer.execute("DELETE FROM game_moves WHERE rowid = (SELECT max(rowid) - 1 FROM game_moves)")
        insert_game(writer, factory.make())
        same(db, path)
        assert db.snapshot is not None and "orphan-2" in db.snapshot.orphans
        # Its games row arrives later: no longer an orphan.
        rows = factory.make()
        rows["game"]["game_id"] = "orphan-1"
        rows["moves"] = []
        insert_game(writer, rows)
        same(db, path)
        assert db.snapshot is not None and "orphan-1" not in db.snapshot.orphans
    finally:
        writer.close()
        db.close()


def test_pending_games_rechecked_in_bounded_slices(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    writer = connect_writer(path)
    db = GameDB(path)
    factory = GameFactory(KEY, 2)
    n = gamedb._PENDING_RECENT + 2 * gamedb._PENDING_SLICE + 50
    try:
        with writer:  # headers only: the recheck reads games rows
            writer.executemany(
                "INSERT INTO games(game_id, board_type, num_players, created_at, game_status, winner,"
                " total_moves, total_turns, source, schema_version)"
                " VALUES (?, 'square8', 2, '2025-01-01', 'active', NULL, 0, 0, 't', 18)",
                [(f"p{i:05d}",) for i in range(n)],
            )
        first = db.refresh()
        assert first.configs[KEY].skipped.active == n
        old = n - gamedb._PENDING_RECENT
        with writer:  # the oldest and a recent one finish
            writer.execute(
                "UPDATE games SET game_status='completed', winner=1 WHERE game_id IN ('p00000', ?)",
                (f"p{n - 1:05d}",),
            )
        insert_game(writer, factory.make())  # a commit, so the refresh is not the no-change path
        snap = db.refresh()
        assert snap.configs[KEY].usable_games >= 2  # the recent one at once (+ the new game)
        for _ in range(math.ceil(old / gamedb._PENDING_SLICE)):
            with writer:
                writer.execute("UPDATE games SET total_turns = total_turns + 1 WHERE rowid = 1")
            db.refresh()
        same(db, path)
        assert db.snapshot is not None and db.snapshot.configs[KEY].usable_games == 3
    finally:
        writer.close()
        db.close()


def test_connection_kept_across_checkpoints_and_dropped_for_a_copy_in_place(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    write_games(path, KEY, 10, seed=3)
    other = tmp_path / "other.db"
    write_games(other, KEY, 4, seed=9)
    db = GameDB(path)
    writer = connect_writer(path)
    try:
        db.refresh()
        conn = db._conn
        factory = GameFactory(KEY, 4)
        for _ in range(3):
            insert_game(writer, factory.make())
            writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the main file changes under the reader
            same(db, path)
            assert db._conn is conn  # the same connection (and what it caches)
        writer.close()
        shutil.copyfile(other, path)  # same inode, other bytes, no commit seen
        snap = db.refresh()
        assert snap.replaced and db._conn is not conn
        same(db, path)
    finally:
        db.close()
