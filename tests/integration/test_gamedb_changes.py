"""GameDB notices inserts, status updates, replaced and vanished files, and a live writer process."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from daemon.data.gamedb import GameDB
from daemon.data.sources import GameSources
from daemon.keys import ALL_CONFIG_KEYS, normalize_board
from daemon.selfplay_sim import GameFactory, connect_writer, insert_game, write_games

ROOT = Path(__file__).resolve().parents[2]


def truth(path: Path) -> dict[str, int]:
    """Usable games per config by a plain full count (the reference)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT board_type, num_players, count(*) FROM games WHERE lower(game_status) IN"
            " ('completed', 'finished') AND winner IS NOT NULL GROUP BY board_type, num_players"
        ).fetchall()
    finally:
        conn.close()
    out: dict[str, int] = {}
    for board, n, count in rows:
        key = f"{normalize_board(board)}_{n}p"
        out[key] = out.get(key, 0) + count
    return out


def usable(snap_configs: dict[str, object]) -> dict[str, int]:
    return {k: c.usable_games for k, c in snap_configs.items() if c.usable_games}  # type: ignore[attr-defined]


def test_status_update_is_noticed_and_signatures(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    writer = connect_writer(path)
    db = GameDB(path)
    try:
        f8 = GameFactory("square8_2p", 1)
        done = f8.make("completed")
        active = f8.make("active")
        insert_game(writer, done)
        insert_game(writer, active)
        s1 = db.refresh()
        c1 = s1.configs["square8_2p"]
        assert (c1.usable_games, c1.skipped.active, s1.status_updates) == (1, 1, 0)

        writer.execute(
            "UPDATE games SET game_status='completed', winner=2 WHERE game_id=?", (active["game"]["game_id"],)
        )
        s2 = db.refresh()
        c2 = s2.configs["square8_2p"]
        assert (c2.usable_games, c2.skipped.active, s2.status_updates) == (2, 0, 1)
        assert c2.new_games == 1
        assert c2.signature != c1.signature

        s3 = db.refresh()  # nothing changed
        assert not s3.changed and s3.configs["square8_2p"].signature == c2.signature
        assert s3.configs["square8_2p"].new_games == 0

        insert_game(writer, GameFactory("hex8_3p", 2).make("completed"))
        s4 = db.refresh()
        assert s4.configs["square8_2p"].signature == c2.signature  # other config: no change here
        assert s4.configs["hex8_3p"].usable_games == 1
        assert s4.configs["square8_2p"].new_games == 0 and s4.configs["hex8_3p"].new_games == 1
    finally:
        writer.close()
        db.close()


def _two_dbs(tmp_path: Path) -> tuple[Path, Path]:
    big, small = tmp_path / "big.db", tmp_path / "small.db"
    write_games(big, "square8_2p", 30, seed=1, active_share=0, abandoned_share=0, draw_share=0)
    write_games(small, "square8_2p", 10, seed=1, active_share=0, abandoned_share=0, draw_share=0)
    return big, small


def test_replaced_by_rename_is_noticed(tmp_path: Path) -> None:
    big, small = _two_dbs(tmp_path)
    live = tmp_path / "live.db"
    shutil.copyfile(big, live)
    db = GameDB(live)
    try:
        assert db.refresh().configs["square8_2p"].usable_games == 30
        tmp = tmp_path / "incoming.db"
        shutil.copyfile(small, tmp)
        os.replace(tmp, live)  # new inode
        snap = db.refresh()
        assert snap.replaced and snap.ok
        assert snap.configs["square8_2p"].usable_games == 10
        assert snap.configs["square8_2p"].new_games == -20
        assert not db.refresh().replaced
    finally:
        db.close()


def test_replaced_in_place_is_noticed(tmp_path: Path) -> None:
    big, small = _two_dbs(tmp_path)
    live = tmp_path / "live.db"
    shutil.copyfile(big, live)
    db = GameDB(live)
    try:
        first = db.refresh()
        assert first.configs["square8_2p"].usable_games == 30
        inode = live.stat().st_ino
        shutil.copyfile(small, live)  # same inode, other content
        assert live.stat().st_ino == inode
        snap = db.refresh()
        assert snap.replaced and snap.ok
        assert snap.configs["square8_2p"].usable_games == 10
        assert snap.configs["square8_2p"].signature != first.configs["square8_2p"].signature
    finally:
        db.close()


def test_vanished_file_and_return(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    write_games(path, "hex8_2p", 12, seed=3, active_share=0, abandoned_share=0, draw_share=0)
    keep = tmp_path / "keep.db"
    shutil.copyfile(path, keep)
    db = GameDB(path)
    try:
        assert db.poll().configs["hex8_2p"].usable_games == 12
        path.unlink()
        gone = db.poll()
        assert not gone.ok and gone.error_kind == "missing"
        assert gone.error is not None and "went away" in gone.error and str(path) in gone.error
        assert gone.configs == {}
        shutil.copyfile(keep, path)
        back = db.poll()
        assert back.ok and back.configs["hex8_2p"].usable_games == 12
    finally:
        db.close()
    never = GameDB(tmp_path / "never.db")
    snap = never.poll()
    never.close()
    assert not snap.ok and snap.error_kind == "missing" and "not found" in (snap.error or "")


WRITER = """
import sys
from pathlib import Path
from daemon.selfplay_sim import GameFactory, connect_writer, insert_game
path, n = Path(sys.argv[1]), int(sys.argv[2])
conn = connect_writer(path)
factories = [GameFactory(k, 7) for k in ("square8_2p", "hex8_3p", "square19_4p")]
actives = []
for i in range(n):
    f = factories[i % len(factories)]
    status = "active" if i % 5 == 0 else "completed"
    rows = f.make(status, draw=(i % 11 == 0))
    insert_game(conn, rows)
    if status == "active":
        actives.append(rows["game"]["game_id"])
    if i % 7 == 0 and actives:  # finish an earlier game: a status update
        conn.execute("UPDATE games SET game_status='completed', winner=1 WHERE game_id=?", (actives.pop(0),))
    if i % 50 == 0:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
conn.close()
print("done", flush=True)
"""


def test_concurrent_writer_process_converges(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    connect_writer(path).close()  # schema + WAL before the reader starts
    other = tmp_path / "other.db"
    write_games(other, "square8_3p", 9, seed=5, active_share=0, abandoned_share=0, draw_share=0)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "400"], env=env, stdout=subprocess.PIPE, text=True
    )
    db = GameDB(path, busy_timeout=5.0)
    sources = GameSources([str(path), str(other)], ALL_CONFIG_KEYS)
    polls = 0
    seen_rows: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None:
            assert time.monotonic() < deadline, "writer did not finish"
            snap = db.refresh()  # raises on any error: none may reach us
            assert snap.ok
            seen_rows.append(snap.max_rowid)
            res = sources.poll()
            assert res.healthy(), {p: s.error for p, s in res.sources.items()}
            assert res.configs["square8_3p"].usable_games == 9
            polls += 1
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "done" in out
        final = db.refresh()
        res = sources.poll()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        db.close()
        sources.close()
    assert polls >= 3, "reader never overlapped the writer"
    assert seen_rows == sorted(seen_rows)  # the watermark never goes back
    assert len(set(seen_rows)) >= 3, seen_rows  # refreshes saw the table grow while it was written
    want = truth(path)
    assert usable(final.configs) == want
    assert final.max_rowid == 400
    assert final.status_updates > 0
    fresh = GameDB(path)
    try:
        again = fresh.refresh()
    finally:
        fresh.close()
    assert usable(again.configs) == want
    for key, cs in final.configs.items():
        assert cs.skipped.as_dict() == again.configs[key].skipped.as_dict(), key
    assert res.configs["square8_2p"].usable_games == want["square8_2p"]
    assert res.configs["square8_3p"].usable_games == 9


def test_first_orphan_scan_by_index_equals_a_full_scan(tmp_path: Path) -> None:
    # The first pass hops along the game_id index; a table without that index is
    # scanned row by row. Both must find the same orphans, and later passes the new ones.
    db = tmp_path / "indexed.db"
    write_games(db, "square8_2p", 40, seed=3)
    c = sqlite3.connect(db)
    with c:
        gids = [r[0] for r in c.execute("SELECT game_id FROM games ORDER BY rowid LIMIT 3")]
        c.executemany("DELETE FROM games WHERE game_id = ?", [(g,) for g in gids])  # their moves stay
        c.execute(
            "INSERT INTO game_moves(game_id, move_number, turn_number, player, phase, move_type, move_json)"
            " VALUES ('~last', 0, 0, 1, 'ring_placement', 'place_ring', '{}')"
        )
    c.close()
    plain = tmp_path / "plain.db"
    src, dst = sqlite3.connect(db), sqlite3.connect(plain)
    src.backup(dst)  # a consistent copy, whatever is still in the WAL
    src.close()
    with dst:
        dst.execute("CREATE TABLE gm AS SELECT * FROM game_moves")
        dst.execute("DROP TABLE game_moves")
        dst.execute("ALTER TABLE gm RENAME TO game_moves")
    dst.close()
    a, b = GameDB(db), GameDB(plain)
    try:
        want = tuple(sorted([*gids, "~last"]))
        assert a.refresh().orphans == b.refresh().orphans == want
        assert a._schema and b._schema and a._schema.moves_by_game and not b._schema.moves_by_game
        for path in (db, plain):
            c = sqlite3.connect(path)
            with c:
                c.execute(
                    "INSERT INTO game_moves(game_id, move_number, turn_number, player, phase, move_type,"
                    " move_json) VALUES ('0-new', 0, 0, 1, 'ring_placement', 'place_ring', '{}')"
                )
            c.close()
        assert a.refresh().orphans == b.refresh().orphans == tuple(sorted([*want, "0-new"]))
    finally:
        a.close()
        b.close()
