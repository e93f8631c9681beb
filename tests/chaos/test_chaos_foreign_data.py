"""Chaos: foreign data in a game database (DESIGN 13: one bad row never fails an export).

Real SQLite files written by the synthetic writer, then edited the way foreign writers leave
them: games without move rows (upstream's header-heavy databases), one poisoned row (invalid
UTF-8, 50,000-deep JSON, a text winner, a move number past int32, a blob where text belongs),
board names in odd spellings, a schema version newer than the reader knows. Each time the
poll and the export (one process and the default two workers) finish, agree on the usable
games, and say per reason what they skipped.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.data.gamedb import GameDB
from daemon.export.job import run_export
from daemon.export.rows import game_id_hash
from daemon.export.workers import TASK_GAMES
from daemon.keys import board_aliases, normalize_board
from daemon.selfplay_sim import write_games
from daemon.settings import Settings, settings_from_mapping

KEY = "square8_2p"
NOW = datetime(2026, 1, 2, tzinfo=UTC)  # fixed: the NPZ stores it, and files are compared
DEEP = '{"a":' * 50_000 + "1" + "}" * 50_000


def _rollback_db(path: Path, key: str, n: int, seed: int) -> None:
    """A rollback-journal database: its bytes are the whole database, so copies are cheap."""
    write_games(path, key, n, seed=seed)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def base_db(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    # Enough usable games that the default two workers are used (2 x TASK_GAMES).
    path = tmp_path_factory.mktemp("base") / "base.db"
    _rollback_db(path, KEY, 2 * TASK_GAMES + 90, seed=21)
    return path.read_bytes()


def _copy(base: bytes, path: Path) -> Path:
    path.write_bytes(base)
    return path


def _settings(tmp: Path, db: Path, workers: int | None, name: str = "data") -> Settings:
    export: dict[str, Any] = {"min_free_bytes": 0}
    if workers is not None:
        export["workers"] = workers
    return settings_from_mapping({"data_dir": str(tmp / name), "game_dbs": [str(db)], "export": export})


def _poll(db: Path) -> Any:
    g = GameDB(db)
    try:
        return g.refresh()
    finally:
        g.close()


def _usable_rowids(conn: sqlite3.Connection, limit: int) -> list[int]:
    rows = conn.execute(
        "SELECT g.rowid FROM games g WHERE game_status='completed' AND winner IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM game_moves m WHERE m.game_id = g.game_id) ORDER BY g.rowid DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [r[0] for r in rows]


# -- item 1: games without move rows ------------------------------------------------------------
def test_header_heavy_database_exports_with_default_settings(base_db: bytes, tmp_path: Path) -> None:
    """Thousands of games, most without move rows: worker blocks with no samples are empty segments."""
    db = _copy(base_db, tmp_path / "heavy.db")
    conn = sqlite3.connect(db)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(games)") if r[1] != "game_id"]
    names = ", ".join(cols)
    template = conn.execute(
        f"SELECT {names} FROM games WHERE game_status='completed' AND winner IS NOT NULL LIMIT 1"
    ).fetchone()
    marks = ",".join("?" * (len(cols) + 1))
    conn.executemany(  # newest rows: header only, as upstream's databases mostly are
        f"INSERT INTO games(game_id, {names}) VALUES ({marks})",
        [(f"header-only-{i}", *template) for i in range(3000)],
    )
    conn.commit()
    conn.close()
    snap = _poll(db)
    usable = snap.configs[KEY].usable_games
    assert usable > 3000

    default = _settings(tmp_path, db, None)
    assert default.export.workers == 2  # the default, with parallel tasks
    two = run_export(default, KEY, now=NOW)
    one = run_export(_settings(tmp_path, db, 1, "one"), KEY, now=NOW)
    assert two.games == one.games == usable
    assert two.samples == one.samples > 0
    assert two.sha256 == one.sha256 and two.skipped == one.skipped
    with np.load(two.output, allow_pickle=False) as z:
        assert len(z["policy_index"]) == two.samples


# -- item 2: one bad row --------------------------------------------------------------------
def _poison(conn: sqlite3.Connection, kind: str, rowid: int) -> str | None:
    """Break one row of game ``rowid``; return the reason the export must count (None: none)."""
    gid = conn.execute("SELECT game_id FROM games WHERE rowid=?", (rowid,)).fetchone()[0]
    one_move = "(SELECT rowid FROM game_moves WHERE game_id=? ORDER BY move_number LIMIT 1 OFFSET 2)"
    if kind == "move_json_utf8":
        bad = "CAST(x'7b2274797065223a22ff227d' AS TEXT)"  # {"type":"\xff"}
        conn.execute(f"UPDATE game_moves SET move_json={bad} WHERE rowid={one_move}", (gid,))
        return "move_invalid_utf8"
    if kind == "move_json_deep":
        conn.execute(f"UPDATE game_moves SET move_json=? WHERE rowid={one_move}", (DEEP, gid))
        return "move_too_deep"
    if kind == "move_json_blob":  # a number where JSON text belongs
        conn.execute(f"UPDATE game_moves SET move_json=12345 WHERE rowid={one_move}", (gid,))
        return "move_bad_json"
    if kind == "move_number_huge":
        conn.execute(f"UPDATE game_moves SET move_number=? WHERE rowid={one_move}", (2**40, gid))
        return "move_bad_number"
    if kind == "move_number_text":
        conn.execute(f"UPDATE game_moves SET move_number='x' WHERE rowid={one_move}", (gid,))
        return "move_bad_number"
    if kind == "phase_utf8":
        conn.execute(f"UPDATE game_moves SET phase=CAST(x'6d6fff' AS TEXT) WHERE rowid={one_move}", (gid,))
        return None  # an unknown phase: the move is still usable
    if kind == "status_utf8":
        conn.execute(
            "UPDATE games SET game_status=CAST(x'636f6d706c65746564ff' AS TEXT) WHERE rowid=?", (rowid,)
        )
        return "undecodable"
    if kind == "board_utf8":
        conn.execute("UPDATE games SET board_type=CAST(x'7371ff38' AS TEXT) WHERE rowid=?", (rowid,))
        return None  # no config at all: not this config's game
    if kind == "game_id_utf8":  # the game and its moves keyed by an id that is not UTF-8
        bad = "CAST(x'67ff' || hex(?) AS TEXT)"
        conn.execute(f"UPDATE game_moves SET game_id={bad} WHERE game_id=?", (gid, gid))
        conn.execute(f"UPDATE games SET game_id={bad} WHERE rowid=?", (gid, rowid))
        return None  # exported, under the id with a replacement character
    if kind == "winner_text":
        conn.execute("UPDATE games SET winner='abc' WHERE rowid=?", (rowid,))
        return "bad_winner"
    if kind == "created_at_blob":
        conn.execute("UPDATE games SET created_at=x'ff00' WHERE rowid=?", (rowid,))
        return None
    if kind == "metadata_deep":
        conn.execute("UPDATE games SET metadata_json=? WHERE rowid=?", (DEEP, rowid))
        return None  # metadata is optional: read as empty
    if kind == "player_seat_text":
        conn.execute(
            "UPDATE game_players SET player_number='abc' WHERE game_id=? AND player_number=2", (gid,)
        )
        return "player_bad_row"
    raise AssertionError(kind)


POISONS = [
    "move_json_utf8",
    "move_json_deep",
    "move_json_blob",
    "move_number_huge",
    "move_number_text",
    "phase_utf8",
    "status_utf8",
    "board_utf8",
    "game_id_utf8",
    "winner_text",
    "created_at_blob",
    "metadata_deep",
    "player_seat_text",
]


@pytest.mark.parametrize("kind", POISONS)
def test_one_bad_row_skips_that_row_never_the_export(base_db: bytes, tmp_path: Path, kind: str) -> None:
    db = _copy(base_db, tmp_path / "games.db")
    before = _poll(db).configs[KEY].usable_games
    conn = sqlite3.connect(db)
    reason = _poison(conn, kind, _usable_rowids(conn, 5)[2])
    conn.commit()
    conn.close()

    snap = _poll(db)  # the poll reads the bad row and goes on
    assert snap.ok, snap.error
    cs = snap.configs[KEY]
    game_level = reason in ("undecodable", "bad_winner") or kind == "board_utf8"
    assert cs.usable_games == before - (1 if game_level else 0)
    if reason in ("undecodable", "bad_winner"):
        assert cs.skipped.as_dict()[reason] == 1, cs.skipped

    results = [run_export(_settings(tmp_path, db, w, f"data{w}"), KEY, now=NOW) for w in (1, 2)]
    for r in results:
        assert r.games == cs.usable_games, (kind, r.games, cs.usable_games)
        assert r.samples > 0
        if reason is not None:
            assert r.skipped.get(reason) == 1, (kind, r.skipped)
    serial, parallel = results
    assert serial.skipped == parallel.skipped and serial.sha256 == parallel.sha256


def test_bad_rows_mixed_in_one_database(base_db: bytes, tmp_path: Path) -> None:
    """Every kind of bad row at once, in different games: each counted under its own reason."""
    db = _copy(base_db, tmp_path / "games.db")
    conn = sqlite3.connect(db)
    rowids = _usable_rowids(conn, 40)
    expected: dict[str, int] = {}
    for i, kind in enumerate(POISONS):  # each kind in another game
        reason = _poison(conn, kind, rowids[2 * i])
        if reason is not None:
            expected[reason] = expected.get(reason, 0) + 1
    conn.commit()
    conn.close()
    snap = _poll(db)
    assert snap.ok, snap.error
    r = run_export(_settings(tmp_path, db, 2), KEY, now=NOW)
    assert r.games == snap.configs[KEY].usable_games
    for reason, count in expected.items():
        assert r.skipped.get(reason) == count, (reason, r.skipped)


# -- item 13: board spellings and schema versions -------------------------------------------
SPELLINGS = ["SQUARE8", "sq8 ", " Square8\t", "Sq8", "square8", "sq8\n"]
NOT_BOARDS = ["squaré8", "sq8\x00", "square 8", "sq8x", "SQUARE8\u00a0"]


def test_poll_and_export_agree_on_board_spellings(base_db: bytes, tmp_path: Path) -> None:
    db = _copy(base_db, tmp_path / "games.db")
    conn = sqlite3.connect(db)
    rowids = _usable_rowids(conn, 60)
    odd = SPELLINGS + NOT_BOARDS
    for rowid, board in zip(rowids, odd, strict=False):
        conn.execute("UPDATE games SET board_type=? WHERE rowid=?", (board, rowid))
    # Numbers of other types: the player count as a real, a blob board name.
    conn.execute("UPDATE games SET num_players=2.0 WHERE rowid=?", (rowids[len(odd)],))
    conn.execute("UPDATE games SET board_type=CAST('sq8' AS BLOB) WHERE rowid=?", (rowids[len(odd) + 1],))
    conn.commit()
    conn.close()
    snap = _poll(db)
    usable = snap.configs[KEY].usable_games
    r = run_export(_settings(tmp_path, db, 1), KEY, now=NOW)
    assert r.games == usable, (r.games, usable)
    r2 = run_export(_settings(tmp_path, db, 2, "two"), KEY, now=NOW)
    assert r2.games == usable and r2.sha256 == r.sha256
    # Exactly the accepted spellings are in the file (and none of the others).
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    ro.text_factory = bytes
    edited = ",".join(str(x) for x in rowids[: len(odd) + 2])
    by_board = {
        game_id_hash(gid.decode()): board
        for gid, board in ro.execute(f"SELECT game_id, board_type FROM games WHERE rowid IN ({edited})")
    }
    ro.close()
    with np.load(r.output, allow_pickle=False) as z:
        exported = set(z["game_ids"].tolist())
    for h, board in by_board.items():
        accepted = isinstance(board, bytes) and _accepted(board)
        assert (h in exported) == accepted, (board, accepted)


def _accepted(raw: bytes) -> bool:
    try:
        return normalize_board(raw.decode()) == "square8"
    except (UnicodeDecodeError, ValueError):
        return False


def test_normalize_board_is_what_sql_selects() -> None:
    """The SQL prefilter and ``normalize_board`` agree on every spelling, odd ones included."""
    from daemon.keys import board_sql  # here: the module still imports where it is missing

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (b)")
    values: list[Any] = [*SPELLINGS, *NOT_BOARDS, "HEX", " hex8 ", "hexagonal\r", "\u212aey", "", "sq19", 8]
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
    for board in ("square8", "square19", "hex8", "hexagonal"):
        marks = ",".join("?" * len(board_aliases(board)))
        sql = f"SELECT b FROM t WHERE {board_sql('b')} IN ({marks})"
        sql_hits = {v for (v,) in conn.execute(sql, board_aliases(board))}
        py_hits = set()
        for v in values:
            try:
                if normalize_board(v) == board:
                    py_hits.add(v)
            except ValueError:
                pass
        assert sql_hits == py_hits, board


def test_newer_schema_version_is_a_warning(base_db: bytes, tmp_path: Path) -> None:
    db = _copy(base_db, tmp_path / "games.db")
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_metadata SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    snap = _poll(db)
    assert snap.ok and snap.schema_version == 99
    warning = "schema_version 99 is newer than this reader knows (v18); reading the columns it has"
    assert snap.warnings == (warning,)
    assert run_export(_settings(tmp_path, db, 1), KEY, now=NOW).games == snap.configs[KEY].usable_games
    assert _poll(_copy(base_db, tmp_path / "v18.db")).warnings == ()
