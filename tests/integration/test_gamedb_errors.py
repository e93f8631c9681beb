"""Unreadable game databases: a typed error naming the file and the reason; other sources unaffected."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.data.gamedb import (
    CorruptDatabase,
    DatabaseLocked,
    GameDB,
    GameDBError,
    NotADatabase,
    SchemaError,
)
from daemon.data.sources import GameSources
from daemon.keys import ALL_CONFIG_KEYS
from daemon.selfplay_sim import write_games


def _random_bytes(path: Path, real: Path) -> None:
    path.write_bytes(random.Random(1).randbytes(64 * 1024))


def _truncated(path: Path, real: Path) -> None:
    path.write_bytes(real.read_bytes()[:4096])


def _empty_sqlite(path: Path, real: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE unrelated (x)")
    conn.commit()
    conn.close()


def _no_moves_table(path: Path, real: Path) -> None:
    shutil.copyfile(real, path)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE game_moves")
    conn.commit()
    conn.close()


def _games_page_garbage(path: Path, real: Path) -> None:
    """The real file with the root page of ``games`` overwritten by garbage."""
    shutil.copyfile(real, path)
    conn = sqlite3.connect(path)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='games'").fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with path.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(random.Random(2).randbytes(page_size))


CASES: list[tuple[str, Callable[[Path, Path], None], type[GameDBError], str]] = [
    ("random_bytes", _random_bytes, NotADatabase, "not an SQLite database"),
    ("truncated", _truncated, CorruptDatabase, "corrupt"),
    ("empty_sqlite", _empty_sqlite, SchemaError, "not a GameReplayDB"),
    ("no_game_moves", _no_moves_table, SchemaError, "game_moves"),
    ("corrupt_page", _games_page_garbage, CorruptDatabase, "corrupt"),
]


@pytest.mark.parametrize(("name", "make", "exc", "reason"), CASES, ids=[c[0] for c in CASES])
def test_bad_file_typed_error_and_other_sources_unaffected(
    tmp_path: Path,
    real_db: Path,
    name: str,
    make: Callable[[Path, Path], None],
    exc: type[GameDBError],
    reason: str,
) -> None:
    bad = tmp_path / f"{name}.db"
    make(bad, real_db)
    db = GameDB(bad, busy_timeout=0.2)
    try:
        with pytest.raises(exc) as info:
            db.open()
            db.refresh()
        assert info.value.path == bad and reason in info.value.reason
        assert str(bad) in str(info.value)
        snap = db.poll()  # never raises
        assert not snap.ok and snap.error_kind == exc.kind and str(bad) in (snap.error or "")
    finally:
        db.close()

    good = tmp_path / "good.db"
    write_games(good, "hex8_2p", 8, seed=4, active_share=0, abandoned_share=0, draw_share=0)
    sources = GameSources([str(real_db), str(bad), str(good)], ALL_CONFIG_KEYS)
    try:
        res = sources.poll()
    finally:
        sources.close()
    assert not res.healthy()
    assert not res.sources[str(bad)].ok and res.sources[str(bad)].configs == {}
    assert res.sources[str(real_db)].ok and res.sources[str(good)].ok
    assert res.configs["square8_3p"].usable_games == 5
    assert res.configs["square8_2p"].skipped.orphan == 2
    assert res.configs["hex8_2p"].usable_games == 8


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
conn.close()
"""


def test_locked_database(tmp_path: Path, real_db: Path) -> None:
    changes: list[tuple[str, bool]] = []
    sources = GameSources(
        [str(real_db)], ALL_CONFIG_KEYS, busy_timeout=0.2, on_change=lambda p, ok, e: changes.append((p, ok))
    )
    db = GameDB(real_db, busy_timeout=0.2)
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(real_db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(DatabaseLocked) as info:
            db.refresh()
        assert info.value.path == real_db and "locked" in info.value.reason
        snap = db.poll()
        assert not snap.ok and snap.error_kind == "locked"
        assert not sources.poll().healthy()
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        again = db.poll()
        assert again.ok and again.configs["square8_3p"].usable_games == 5
        res = sources.poll()
        assert res.healthy() and res.configs["square8_3p"].usable_games == 5
        assert changes == [(str(real_db), False), (str(real_db), True)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        db.close()
        sources.close()


def test_lock_taken_after_first_read_then_released(tmp_path: Path, real_db: Path) -> None:
    db = GameDB(real_db, busy_timeout=0.2)
    proc = None
    try:
        first = db.refresh()
        assert first.configs["square8_3p"].usable_games == 5
        os.utime(real_db)  # a touch, so the reader cannot take the no-change path
        proc = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(real_db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert db.poll().error_kind == "locked"
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        back = db.poll()
        # Same file: counts kept, not reported as replaced.
        assert back.ok and not back.replaced and back.configs["square8_3p"].usable_games == 5
        assert back.configs["square8_3p"].new_games == 0
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        db.close()
