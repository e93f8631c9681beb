"""Incremental export (segments) gives exactly the rows of a full export, through every change."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from daemon.export import segments, tiers
from daemon.export.job import run_export
from daemon.selfplay_sim import GameFactory, connect_writer, insert_game, write_games
from daemon.settings import Settings, settings_from_mapping

KEY = "square8_2p"


def make_settings(data: Path, db: Path | list[Path], *, incremental: bool, workers: int = 2) -> Settings:
    return settings_from_mapping(
        {
            "data_dir": str(data),
            "game_dbs": [str(p) for p in (db if isinstance(db, list) else [db])],
            "configs": [KEY],
            "export": {"min_free_bytes": 0, "workers": workers, "incremental": incremental},
        }
    )


def rows(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if z[k].dtype.kind != "U"}  # metadata members are strings


def same_as_full(tmp: Path, db: Path | list[Path], inc: Settings, tag: str) -> dict[str, object]:
    """Export incrementally and fully (another data dir); the rows must be identical."""
    got = run_export(inc, KEY)
    full = run_export(make_settings(tmp / f"full-{tag}", db, incremental=False), KEY, force=True)
    assert not got.cache_hit
    assert (got.games, got.samples, got.skipped) == (full.games, full.samples, full.skipped)
    a, b = rows(got.output), rows(full.output)
    assert a.keys() == b.keys()
    for k in b:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    return manifest(inc)


def manifest(s: Settings) -> dict[str, object]:
    (store,) = [p for p in (s.training_dir / ".segments" / KEY).iterdir() if p.is_dir()]
    data: dict[str, object] = orjson.loads((store / "manifest.json").read_bytes())
    files = {p.name for p in store.iterdir()} - {"manifest.json"}
    assert files == {seg["file"] for seg in data["segments"]}  # type: ignore[attr-defined]  # nothing else kept
    data["store"] = store
    return data


def test_incremental_equals_full_through_appends_updates_and_replacement(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    write_games(db, KEY, 300, seed=1, active_share=0.1)
    inc = make_settings(tmp_path / "inc", db, incremental=True)
    first = same_as_full(tmp_path, db, inc, "0")
    segs0 = first["segments"]
    assert sum(s["games"] for s in segs0) == run_export(inc, KEY).games  # type: ignore[attr-defined]

    writer = connect_writer(db)
    try:
        factory = GameFactory(KEY, 50)
        for _ in range(15):  # +5%
            insert_game(writer, factory.make("completed"))
        second = same_as_full(tmp_path, db, inc, "1")
        old = {s["file"] for s in segs0}  # type: ignore[attr-defined]
        new = [s for s in second["segments"] if s["file"] not in old]  # type: ignore[attr-defined]
        assert sum(s["count"] for s in new) == 15  # only the new games were encoded
        assert len(second["segments"]) == len(segs0) + len(new)  # type: ignore[arg-type]

        # A status update inside encoded ranges: the segments holding those rowids are rebuilt.
        pending = [
            r for (r,) in writer.execute("SELECT rowid FROM games WHERE game_status='active' ORDER BY rowid")
        ]
        assert len(pending) >= 2
        for r in pending[:2]:
            writer.execute("UPDATE games SET game_status='completed', winner=1 WHERE rowid=?", (r,))
        third = same_as_full(tmp_path, db, inc, "2")
        kept = {s["file"] for s in second["segments"]} & {s["file"] for s in third["segments"]}  # type: ignore[attr-defined]
        assert 0 < len(kept) < len(second["segments"])  # type: ignore[arg-type]
    finally:
        writer.close()

    # The source replaced by another file: a new store, the old one removed.
    other = tmp_path / "other.db"
    write_games(other, KEY, 140, seed=7)
    tmp = tmp_path / "incoming.db"
    shutil.copyfile(other, tmp)
    os.replace(tmp, db)
    fourth = same_as_full(tmp_path, db, inc, "3")
    assert fourth["store"] != third["store"] and not Path(str(third["store"])).exists()


def test_segments_on_disk_are_bounded_by_the_output(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    write_games(db, KEY, 60, seed=2)
    inc = make_settings(tmp_path / "inc", db, incremental=True, workers=1)
    writer = connect_writer(db)
    try:
        factory = GameFactory(KEY, 9)
        for _ in range(4):
            r = run_export(inc, KEY)
            for _ in range(3):
                insert_game(writer, factory.make("completed"))
        r = run_export(inc, KEY)
    finally:
        writer.close()
    m = manifest(inc)
    store = Path(str(m["store"]))
    on_disk = sum(p.stat().st_size for p in store.iterdir() if p.name != "manifest.json")
    assert sum(s["rows"] for s in m["segments"]) == r.samples  # type: ignore[attr-defined]
    assert on_disk < r.bytes  # the rows of the output, no more
    # Forced: every game encoded again, one store, the old segment files gone.
    forced = run_export(inc, KEY, force=True)
    assert forced.samples == r.samples
    m2 = manifest(inc)
    assert not {s["file"] for s in m["segments"]} & {s["file"] for s in m2["segments"]}  # type: ignore[attr-defined]


def test_many_small_segments_are_compacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "g.db"
    write_games(db, KEY, 30, seed=5)
    inc = make_settings(tmp_path / "inc", db, incremental=True, workers=1)
    monkeypatch.setattr(segments, "_COMPACT_FLOOR", 1)  # at most 1 + 2 x 0 segments for < 128 games
    writer = connect_writer(db)
    try:
        run_export(inc, KEY)
        insert_game(writer, GameFactory(KEY, 3).make("completed"))
        assert len(same_as_full(tmp_path, db, inc, "a")["segments"]) == 2  # type: ignore[arg-type]
        insert_game(writer, GameFactory(KEY, 4).make("completed"))
        assert len(same_as_full(tmp_path, db, inc, "b")["segments"]) == 1  # type: ignore[arg-type]
    finally:
        writer.close()


def window(monkeypatch: pytest.MonkeyPatch, max_games: int) -> None:
    """Scale the tier table down: every export takes at most the newest ``max_games`` games."""
    monkeypatch.setattr(tiers, "TIERS", (tiers.Tier("small", 0, max_games, 1, 100, 128),))


def row_set(path: Path) -> list[bytes]:
    """Every sample of the file as the bytes of its row in each array, sorted (order-free)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = [
            z[k] for k in sorted(z.files) if z[k].dtype.kind != "U" and z[k].ndim and k != "feature_constant"
        ]
    n = len(arrays[0])
    assert all(len(a) == n for a in arrays)
    return sorted(b"".join(a[i].tobytes() for a in arrays) for i in range(n))


def same_samples_as_full(tmp: Path, dbs: list[Path], inc: Settings, tag: str) -> list[dict[str, object]]:
    got = run_export(inc, KEY)
    full = run_export(make_settings(tmp / f"full-{tag}", dbs, incremental=False), KEY, force=True)
    assert not got.cache_hit
    assert (got.games, got.samples, got.skipped) == (full.games, full.samples, full.skipped)
    assert row_set(got.output) == row_set(full.output)
    stores = sorted(p for p in (inc.training_dir / ".segments" / KEY).iterdir() if p.is_dir())
    return [orjson.loads((s / "manifest.json").read_bytes()) for s in stores]


def new_segments(before: list[dict[str, object]], after: list[dict[str, object]]) -> list[dict[str, Any]]:
    """The segments of ``after``'s manifests that no manifest of ``before`` holds (newly encoded)."""
    old = {s["file"] for m in before for s in m["segments"]}  # type: ignore[attr-defined]
    return [s for m in after for s in m["segments"] if s["file"] not in old]  # type: ignore[attr-defined]


def test_the_window_of_max_games_slides_by_dropping_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "g.db"
    write_games(db, KEY, 400, seed=3, active_share=0.0)
    window(monkeypatch, 300)
    inc = make_settings(tmp_path / "inc", db, incremental=True)
    first = same_as_full(tmp_path, db, inc, "0")
    assert sum(s["count"] for s in first["segments"]) == 300  # type: ignore[attr-defined]
    writer = connect_writer(db)
    try:
        factory = GameFactory(KEY, 60)
        for _ in range(20):
            insert_game(writer, factory.make("completed"))
        second = same_as_full(tmp_path, db, inc, "1")  # byte for byte: one source
    finally:
        writer.close()
    segs = second["segments"]
    assert sum(s["count"] for s in segs) == 300  # type: ignore[attr-defined]  # the window, no more on disk
    old = {s["file"] for s in first["segments"]}  # type: ignore[attr-defined]
    reused = [s for s in segs if s["file"] in old]  # type: ignore[attr-defined]
    # The 20 new games, and the part of the one segment the window now cuts, were encoded.
    n = sum(s["count"] for s in new_segments([first], [second]))
    assert 20 <= n < 20 + segments.TASK_GAMES
    assert sum(s["count"] for s in reused) == 300 - n  # type: ignore[misc]
    assert min(s["lo"] for s in segs) > min(s["lo"] for s in first["segments"])  # type: ignore[attr-defined]


def test_several_sources_give_the_full_exports_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    write_games(a, KEY, 260, seed=21)
    write_games(b, KEY, 150, seed=200_000)  # distinct game ids
    inc = make_settings(tmp_path / "inc", [a, b], incremental=True)
    stores = same_samples_as_full(tmp_path, [a, b], inc, "0")
    assert len(stores) == 2
    writer = connect_writer(b)
    try:
        factory = GameFactory(KEY, 70)
        for _ in range(12):
            insert_game(writer, factory.make("completed"))
        again = same_samples_as_full(tmp_path, [a, b], inc, "1")
        assert [s["count"] for s in new_segments(stores, again)] == [12]  # only the new games of b
        assert len(again) == 2
        # A window across both sources: the newest games of the merge, the same set.
        window(monkeypatch, 200)
        windowed = same_samples_as_full(tmp_path, [a, b], inc, "2")
        assert sum(s["count"] for m in windowed for s in m["segments"]) == 200  # type: ignore[attr-defined]
    finally:
        writer.close()
    # A source dropped from the settings: its store goes with the next export.
    window(monkeypatch, 10_000)
    only_a = make_settings(tmp_path / "inc", [a], incremental=True)
    assert len(same_samples_as_full(tmp_path, [a], only_a, "3")) == 1
