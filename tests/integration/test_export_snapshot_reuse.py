"""The export reuses snapshots: the service's warm poll, and a fresh process's commit fingerprints."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from daemon.data.fingerprint import fingerprint
from daemon.data.sources import GameSources
from daemon.export.exporter import Exporter
from daemon.export.job import ExportResult, run_export
from daemon.selfplay_sim import GameFactory, connect_writer, insert_game, write_games
from daemon.settings import Settings, settings_from_mapping

KEY = "square8_2p"
QUICK = "no commit to any source since the export"


def later() -> datetime:
    """A clock past the file-time race window: the fingerprints just written are trusted."""
    return datetime.now(UTC) + timedelta(seconds=1)


def make_settings(tmp_path: Path, dbs: list[Path], name: str = "data") -> Settings:
    return settings_from_mapping(
        {
            "data_dir": str(tmp_path / name),
            "game_dbs": [str(d) for d in dbs],
            "configs": [KEY],
            "export": {"min_free_bytes": 0},
        }
    )


def arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        # The sample arrays; metadata members are strings (created_at differs by design).
        return {k: z[k] for k in z.files if z[k].dtype.kind != "U"}


def test_service_export_from_the_warm_poll_equals_a_fresh_export(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    write_games(a, KEY, 30, seed=1)
    write_games(b, KEY, 20, seed=2)
    warm_s, fresh_s = make_settings(tmp_path, [a, b], "warm"), make_settings(tmp_path, [a, b], "fresh")
    sources = GameSources(warm_s.game_dbs, warm_s.configs)
    writer = connect_writer(a)
    try:
        sources.poll()
        factory = GameFactory(KEY, 99)
        for _ in range(5):  # new since the poll: the export's incremental refresh must see them
            insert_game(writer, factory.make("completed"))
        warm = Exporter(warm_s, sources).export(KEY)
        fresh = run_export(fresh_s, KEY)
        assert not warm.cache_hit and not fresh.cache_hit
        assert (warm.games, warm.samples, warm.skipped) == (fresh.games, fresh.samples, fresh.skipped)
        assert warm.snapshot == fresh.snapshot
        got, want = arrays(warm.output), arrays(fresh.output)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
        # The poll's databases were refreshed, not replaced by one-off scans.
        snap = sources.db(a.absolute()).snapshot
        assert snap is not None and snap.max_rowid == warm.snapshot[str(a.absolute())]["max_rowid"]
        again = Exporter(warm_s, sources).export(KEY)
        assert again.cache_hit and again.samples == warm.samples
    finally:
        writer.close()
        sources.close()


def quick(s: Settings) -> ExportResult:
    """A hit as a later fresh process sees it: a full-check hit notes the fingerprints, then quick."""
    run_export(s, KEY, now=later())
    return run_export(s, KEY, now=later())


def test_fresh_process_hit_needs_no_snapshot_and_every_commit_misses(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    write_games(db, KEY, 40, seed=3, active_share=0.2)
    s = make_settings(tmp_path, [db])
    writer = connect_writer(db)  # held open: the -wal and -shm stay, as with a live self-play writer
    try:
        first = run_export(s, KEY)
        assert not first.cache_hit
        hit = quick(s)
        assert hit.cache_hit and QUICK in hit.reason and hit.samples == first.samples
        assert hit.games == first.games and hit.skipped == first.skipped

        # A status update (no new row): the fingerprint moves, the full check finds the change.
        (gid,) = writer.execute("SELECT game_id FROM games WHERE game_status='active' LIMIT 1").fetchone()
        writer.execute("UPDATE games SET game_status='completed', winner=1 WHERE game_id=?", (gid,))
        upd = run_export(s, KEY, now=later())
        assert not upd.cache_hit and "status update" in upd.reason and upd.games == first.games + 1

        # A commit that overwrites stale frames of a reset WAL without growing it.
        writer.execute("PRAGMA wal_checkpoint(RESTART)")
        assert QUICK in quick(s).reason  # a checkpoint alone: a full-check hit, then quick again
        size = (tmp_path / "g.db-wal").stat().st_size
        (gid,) = writer.execute("SELECT game_id FROM games WHERE game_status='active' LIMIT 1").fetchone()
        writer.execute("UPDATE games SET game_status='completed', winner=2 WHERE game_id=?", (gid,))
        assert (tmp_path / "g.db-wal").stat().st_size == size  # the WAL did not grow
        # Now: the file times are inside the race window, so no fingerprint is trusted.
        assert fingerprint(db, time.time_ns()) is None
        reset = run_export(s, KEY)
        assert not reset.cache_hit and reset.games == upd.games + 1

        # A new game: a miss, then a quick hit again.
        insert_game(writer, GameFactory(KEY, 77).make("completed"))
        new = run_export(s, KEY)
        assert not new.cache_hit and new.games == reset.games + 1
        assert QUICK in quick(s).reason
    finally:
        writer.close()


def test_quick_hit_misses_on_a_touched_output_or_forced(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    write_games(db, KEY, 10, seed=4)
    s = make_settings(tmp_path, [db])
    first = run_export(s, KEY)
    assert QUICK in quick(s).reason
    assert not run_export(s, KEY, force=True, now=later()).cache_hit
    assert QUICK in run_export(s, KEY, now=later()).reason  # the forced export recorded trusted ones
    out = first.output
    out.write_bytes(out.read_bytes())  # same bytes, another mtime
    assert not run_export(s, KEY, now=later()).cache_hit
    assert QUICK in run_export(s, KEY, now=later()).reason
    # Other export parameters (another encoder history): the quick check falls through.
    other = settings_from_mapping(
        {
            "data_dir": str(tmp_path / "data"),
            "game_dbs": [str(db)],
            "configs": [KEY],
            "export": {"min_free_bytes": 0, "history_length": 2},
        }
    )
    r = run_export(other, KEY)
    assert not r.cache_hit and "export parameters changed" in r.reason
