"""GameDB on the real upstream file (schema v6), through a private tmp copy."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from daemon.data.gamedb import GameDB
from daemon.keys import geometry

ORPHANS = ("6b8b1145-7078-476b-a72f-75a35faecb5e", "f60ffc4f-8eac-4867-a74a-38e6ef4b91c8")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sql(path: Path, query: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def test_real_db_counts_orphans_schema(real_db: Path) -> None:
    db = GameDB(real_db)
    try:
        snap = db.refresh()
    finally:
        db.close()
    assert snap.ok and snap.error is None
    assert snap.schema_version == 6
    cfg = snap.configs["square8_3p"]
    assert cfg.usable_games == 5
    assert cfg.new_games == 5
    assert cfg.skipped.as_dict() == {
        "orphan": 0,
        "active": 0,
        "abandoned": 0,
        "no_winner": 0,
        "other": 0,
        "undecodable": 0,
        "bad_winner": 0,
    }
    assert snap.orphans == ORPHANS
    # The two orphans have two player rows and a square8 initial state: square8_2p.
    assert snap.configs["square8_2p"].skipped.orphan == 2
    assert snap.configs["square8_2p"].usable_games == 0
    assert sum(c.usable_games for c in snap.configs.values()) == 5


def test_real_db_streams_games_with_parsed_moves(real_db: Path) -> None:
    assert _sql(real_db, "SELECT count(*) FROM game_moves") == [(1495,)]
    (want_moves,) = _sql(
        real_db, "SELECT count(*) FROM game_moves WHERE game_id IN (SELECT game_id FROM games)"
    )[0]
    db = GameDB(real_db)
    try:
        snap = db.refresh()
        games = list(db.iter_games("square8_3p", upto_rowid=snap.configs["square8_3p"].watermark))
    finally:
        db.close()
    assert len(games) == 5
    assert sum(len(g.moves) for g in games) == want_moves
    assert [g.rowid for g in games] == sorted((g.rowid for g in games), reverse=True)  # newest first
    geo = geometry("square8")
    for g in games:
        assert g.board_type == "square8" and g.num_players == 3 and g.status == "completed"
        assert g.winner in (1, 3)
        assert g.game_id not in ORPHANS
        assert [m.move_number for m in g.moves] == sorted(m.move_number for m in g.moves)
        assert all(m.valid for m in g.moves)
        assert len(g.players) == 3 and g.ranking is not None and g.ranking[0] == g.winner
        with_to = [m for m in g.moves if m.to_pos is not None]
        assert len(with_to) > len(g.moves) // 2
        for m in g.moves:
            for pos in (m.from_pos, m.to_pos, m.capture_target):
                if pos is not None:
                    assert isinstance(pos, tuple) and len(pos) == 3
                    assert geo.to_grid(pos[0], pos[1], pos[2]) is not None, (g.game_id, m)
    moved = [m for g in games for m in g.moves if m.from_pos is not None and m.to_pos is not None]
    assert moved, "no movement with from/to parsed"


def test_real_db_is_read_only(real_db: Path) -> None:
    before, mtime = _sha(real_db), real_db.stat().st_mtime_ns
    db = GameDB(real_db)
    try:
        db.refresh()
        db.refresh()
        for _ in db.iter_games("square8_3p"):
            pass
    finally:
        db.close()
    assert _sha(real_db) == before
    assert real_db.stat().st_mtime_ns == mtime
    assert not real_db.with_name(real_db.name + "-journal").exists()


def test_real_db_upto_and_limit(real_db: Path) -> None:
    db = GameDB(real_db)
    try:
        db.refresh()
        oldest_first = list(db.iter_games("square8_3p", newest_first=False, limit=2))
        first_rowid = oldest_first[0].rowid
        only_first = list(db.iter_games("square8_3p", upto_rowid=first_rowid))
        assert list(db.iter_games("square8_2p")) == []
    finally:
        db.close()
    assert len(oldest_first) == 2 and oldest_first[0].rowid < oldest_first[1].rowid
    assert [g.rowid for g in only_first] == [first_rowid]
