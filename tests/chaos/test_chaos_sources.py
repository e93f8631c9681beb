"""Chaos: broken game databases and a database replaced mid-export.

One healthy source (square8_2p) beside one that is broken in six ways. Each time:
the service keeps running, the broken source shows ``ok=false`` with the reason,
a ``source_unhealthy`` alert is raised, the healthy source's config is still
decided (and, once, trained), and repairing the file resolves the alert.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.data.gamedb import GameDB
from daemon.data.sources import GameSources
from daemon.export.job import ExportError, run_export
from daemon.selfplay_sim import write_games
from daemon.service.supervisor import Service
from tests.chaos._redis_helpers import (
    alerts_of,
    assert_no_orphans,
    assert_no_temp_files,
    assert_npz_whole,
    chaos_settings,
    metric,
    running_service,
)

GOOD_KEY = "square8_2p"
BAD_KEY = "hex8_2p"
# The reason a broken source must give, by how it was broken (GameDBError kinds).
EXPECTED_KIND = {
    "corrupt": {"corrupt", "not_a_database"},
    "truncated": {"corrupt", "not_a_database"},
    "non_sqlite": {"not_a_database"},
    "locked": {"locked"},
    "schema_less": {"schema"},
    "vanished": {"missing"},
}


def _single_file_db(path: Path, key: str, n: int, seed: int) -> bytes:
    """A rollback-journal database (no -wal file): its bytes are the whole database."""
    write_games(path, key, n, seed=seed)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    return path.read_bytes()


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class _Locker:
    """Another process holding BEGIN EXCLUSIVE on a rollback-journal database."""

    def __init__(self, db: Path) -> None:
        code = (
            "import sqlite3,sys\n"
            f"c=sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n"
            "c.execute('ROLLBACK'); c.close()\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def _break(kind: str, bad: Path, original: bytes) -> _Locker | None:
    if kind == "corrupt":  # overwrite the pages in the middle in place (same inode)
        page = 4096
        with open(bad, "r+b") as f:
            f.seek(page)
            f.write(os.urandom(max(page, len(original) - 3 * page)))
    elif kind == "truncated":
        os.truncate(bad, len(original) // 3)
    elif kind == "non_sqlite":
        _replace(bad, os.urandom(len(original)))
    elif kind == "locked":
        return _Locker(bad)
    elif kind == "schema_less":
        empty = bad.with_name("empty.db")
        conn = sqlite3.connect(empty)
        conn.execute("CREATE TABLE unrelated (x)")
        conn.commit()
        conn.close()
        os.replace(empty, bad)
    elif kind == "vanished":
        bad.unlink()
    else:
        raise AssertionError(kind)
    return None


async def _poll_and_decide(service: Service) -> dict[str, bool]:
    """One poll + health + decision pass without dispatching (no trainer needed)."""
    now = datetime.now(UTC)
    import asyncio

    poll = await asyncio.to_thread(service.app.sources.poll)
    service.evaluator.apply_poll(poll, now)
    service.evaluator.evaluate_health(now)
    decisions = service.evaluator.decide(now, running=set())
    service.evaluator.publish(now, decisions, running=set())
    return {k: d.should_train for k, d in decisions.items()}


@pytest.mark.parametrize("kind", list(EXPECTED_KIND))
async def test_broken_source_is_reported_and_others_keep_training(tmp_path: Path, kind: str) -> None:
    games = tmp_path / "games"
    games.mkdir()
    good, bad = games / "good.db", games / "bad.db"
    _single_file_db(good, GOOD_KEY, 30, seed=1)
    original = _single_file_db(bad, BAD_KEY, 30, seed=2)
    settings = chaos_settings(tmp_path, configs=[GOOD_KEY, BAD_KEY], game_dbs=[str(games / "*.db")])
    async with running_service(settings) as service:
        # A locked database must be reported within a poll, not after the default 5 s busy wait.
        sources = GameSources(
            settings.game_dbs, settings.configs, busy_timeout=0.3, on_change=service.app.alerts.source_changed
        )
        service.app.sources = service.evaluator.sources = sources
        assert await _poll_and_decide(service) == {GOOD_KEY: True, BAD_KEY: True}
        assert alerts_of(service, "source_unhealthy") == []

        locker = _break(kind, bad, original)
        try:
            decided = await _poll_and_decide(service)
            src = service.app.view.sources[str(bad)]
            snap = service.app.sources.last.sources[str(bad)] if service.app.sources.last else None
            assert src["ok"] is False, src
            assert snap is not None and snap.error_kind in EXPECTED_KIND[kind], (snap, kind)
            assert src["error"] and str(bad) in src["error"], src
            (alert,) = alerts_of(service, "source_unhealthy")
            assert str(bad) in alert["message"], alert
            assert metric(service, "ringrift_source_healthy", source=str(bad)) == 0
            assert service.app.view.sources[str(good)]["ok"] is True
            # The healthy source's config is still decided; the broken one's has no data now.
            assert decided == {GOOD_KEY: True, BAD_KEY: False}, decided
            assert service.app.view.configs[BAD_KEY].usable_games == 0
            if kind == "vanished":  # once, for real: a run of the other config while the file is gone
                report = await service.tick(datetime.now(UTC))
                assert report.dispatched == [GOOD_KEY]
                (result,) = await service.wait_runs()
                assert result.state == "succeeded", result.message
                assert service.app.view.sources[str(bad)]["ok"] is False
        finally:
            if locker is not None:
                locker.release()

        _replace(bad, original)  # repaired
        await _poll_and_decide(service)
        assert service.app.view.sources[str(bad)]["ok"] is True
        assert alerts_of(service, "source_unhealthy") == [], service.app.view.alerts
        assert metric(service, "ringrift_source_healthy", source=str(bad)) == 1
        assert service.app.view.configs[BAD_KEY].usable_games > 0
        assert service.app.view.service_running
    assert_no_orphans(tmp_path)


def _cache_entry(settings_dir: Path) -> dict[str, object]:
    data = json.loads((settings_dir / ".export_cache.json").read_text())
    (entry,) = data["entries"].values()
    return dict(entry)


@pytest.mark.parametrize("swap", ["rename", "overwrite"])
def test_database_replaced_mid_export(tmp_path: Path, swap: str) -> None:
    db = tmp_path / "games.db"
    other = tmp_path / "other.db"
    _single_file_db(db, GOOD_KEY, 80, seed=3)
    other_bytes = _single_file_db(other, GOOD_KEY, 30, seed=4)
    settings = chaos_settings(tmp_path, configs=[GOOD_KEY], game_dbs=[str(db)])
    first = run_export(settings, GOOD_KEY)
    out = first.output
    previous = hashlib.sha256(out.read_bytes()).hexdigest()
    cache_before = (settings.training_dir / ".export_cache.json").read_bytes()

    write_games(db, GOOD_KEY, 80, seed=5)  # new games: the next export is a miss
    old_inode = os.stat(db).st_ino
    swapped: list[int] = []

    def progress(done: int, total: int) -> None:
        if swapped:
            return
        swapped.append(done)
        if swap == "rename":  # another file moved into place while the export streams
            os.replace(other, db)
        else:  # the file rewritten in place under the reader
            with open(db, "r+b") as f:
                f.write(other_bytes)
                f.truncate()

    try:
        result = run_export(settings, GOOD_KEY, progress=progress)
    except ExportError:
        # Failed cleanly: the previous output and the cache are exactly as they were.
        assert swapped
        assert hashlib.sha256(out.read_bytes()).hexdigest() == previous
        assert (settings.training_dir / ".export_cache.json").read_bytes() == cache_before
    else:
        # Completed from the snapshot it took: the file and the cache describe the old data.
        assert swapped and swapped[0] < result.games, (swapped, result.games)
        assert assert_npz_whole(out) == result.samples
        assert result.games > first.games
        entry = _cache_entry(settings.training_dir)
        (src,) = entry["sources"].values()  # type: ignore[attr-defined]
        assert src["identity"][1] == old_inode, src
        assert entry["samples"] == result.samples and entry["games"] == result.games
        assert entry["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()  # type: ignore[index]
    assert_no_temp_files(settings.training_dir)

    # The next export is consistent with what is in the file now.
    after = GameDB(db)
    try:
        snap = after.refresh()
    finally:
        after.close()
    now_usable = snap.configs[GOOD_KEY].usable_games
    again = run_export(settings, GOOD_KEY)
    assert not again.cache_hit, again.reason
    assert again.games == now_usable
    assert assert_npz_whole(out) == again.samples
    (src,) = _cache_entry(settings.training_dir)["sources"].values()  # type: ignore[attr-defined]
    assert src["identity"] == list(snap.identity or ()) and src["usable"] == now_usable
    assert run_export(settings, GOOD_KEY).cache_hit
    assert_no_temp_files(settings.training_dir)
