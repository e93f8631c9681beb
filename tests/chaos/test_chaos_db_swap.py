"""Chaos: a game database replaced while the default two-worker export runs (DESIGN 13).

The workers open the path again for every task; a file renamed over it (or a symlink swapped
to another file) after the snapshot must never give an NPZ that mixes the games of two
databases. The export fails cleanly instead (previous NPZ and cache intact), and the next
export reads the new file consistently.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from daemon.export.job import ExportError, run_export
from daemon.export.rows import game_id_hash
from daemon.export.workers import TASK_GAMES
from daemon.selfplay_sim import write_games
from daemon.settings import settings_from_mapping
from tests.chaos._redis_helpers import assert_no_temp_files, assert_npz_whole

KEY = "square8_2p"
GAMES = 12 * TASK_GAMES  # many more tasks than the 2 x workers in flight when the file is swapped


@pytest.fixture(scope="module")
def two_dbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    d = tmp_path_factory.mktemp("swap")
    out = []
    for name, seed in (("a.db", 7), ("b.db", 900_000)):
        path = d / name
        write_games(path, KEY, GAMES, seed=seed)
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        out.append(path.read_bytes())
    return out[0], out[1]


def _hashes(db: Path) -> set[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {game_id_hash(gid) for (gid,) in conn.execute("SELECT game_id FROM games")}
    finally:
        conn.close()


@pytest.mark.parametrize("swap", ["rename", "symlink"])
def test_database_swapped_during_parallel_export_never_mixes(
    two_dbs: tuple[bytes, bytes], tmp_path: Path, swap: str
) -> None:
    a_bytes, b_bytes = two_dbs
    store = tmp_path / "store"
    store.mkdir()
    a, b = store / "a.db", store / "b.db"
    a.write_bytes(a_bytes)
    b.write_bytes(b_bytes)
    games = tmp_path / "games.db"  # the path in game_dbs
    if swap == "rename":
        games.write_bytes(a_bytes)
    else:
        games.symlink_to(a)
    settings = settings_from_mapping(
        {"data_dir": str(tmp_path / "data"), "game_dbs": [str(games)], "export": {"min_free_bytes": 0}}
    )
    assert settings.export.workers == 2
    first = run_export(settings, KEY)  # a previous export that must survive
    out = first.output
    previous = hashlib.sha256(out.read_bytes()).hexdigest()
    cache = settings.training_dir / ".export_cache.json"
    cache_before = cache.read_bytes()
    a_ids, b_ids = _hashes(a), _hashes(b)

    swapped: list[int] = []

    def progress(done: int, total: int) -> None:
        if swapped:
            return
        swapped.append(done)
        if swap == "rename":  # another database moved into place
            tmp = tmp_path / "incoming.db"
            tmp.write_bytes(b_bytes)
            os.replace(tmp, games)
        else:  # the symlink pointed at the other database, atomically
            link = tmp_path / "link.new"
            link.symlink_to(b)
            os.replace(link, games)

    try:
        result = run_export(settings, KEY, force=True, progress=progress)
    except ExportError as e:
        assert swapped, "the export failed before the swap"
        assert "replaced" in str(e), e
        assert hashlib.sha256(out.read_bytes()).hexdigest() == previous
        assert cache.read_bytes() == cache_before
    else:
        with np.load(out, allow_pickle=False) as z:
            ids = set(z["game_ids"].tolist())
        from_a, from_b = len(ids & a_ids), len(ids & b_ids)
        assert not (from_a and from_b), f"the NPZ mixes {from_a} games of a.db and {from_b} of b.db"
        pytest.fail(f"export after the swap succeeded (games={result.games}); it must fail cleanly")
    assert_no_temp_files(settings.training_dir)

    # The next export reads the new file, consistently.
    again = run_export(settings, KEY)
    assert not again.cache_hit
    with np.load(out, allow_pickle=False) as z:
        ids = set(z["game_ids"].tolist())
    assert ids and ids <= b_ids
    assert assert_npz_whole(out) == again.samples
