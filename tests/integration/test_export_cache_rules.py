"""Export on real SQLite: the real v6 database, every cache invalidation rule, the race, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from daemon.cli.exits import EXIT_BAD_ARGS, EXIT_FAILURE, EXIT_OK
from daemon.cli.export import cli_export
from daemon.data.gamedb import Game
from daemon.export.cache import ExportCache
from daemon.export.encoder import EncodedGame, MoveHistoryEncoder
from daemon.export.job import ExportError, run_export
from daemon.export.rows import game_id_hash
from daemon.npz import cells_to_dense, open_training_file
from daemon.selfplay_sim import GameFactory, insert_game, write_games
from daemon.settings import Settings, settings_from_mapping

KEY = "square8_3p"


def make_settings(tmp_path: Path, db: Path, **export: object) -> Settings:
    return settings_from_mapping(
        {"data_dir": str(tmp_path / "data"), "game_dbs": [str(db)], "export": {"min_free_bytes": 0, **export}}
    )


def append_game(db: Path, *, seed: int, status: str = "completed", key: str = KEY) -> str:
    """Insert one v6-compatible game (games, players, initial state, moves) in one transaction."""
    rows = GameFactory(key, seed).make(status)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        insert_game(conn, rows, schema_version=6)
    finally:
        conn.close()
    return str(rows["game"]["game_id"])


def needs(settings: Settings, db: Path) -> tuple[bool, str]:
    """The cache decision for the default output, with the parameters run_export would use."""
    cache = ExportCache(settings.training_dir / ".export_cache.json")
    from daemon.export.encoder import load_encoder
    from daemon.export.job import export_params
    from daemon.export.tiers import get_export_settings, take_snapshots

    snaps = take_snapshots([db])
    es = get_export_settings([db], "square8", 3, snapshots=snaps)
    enc = load_encoder(settings.export.encoder, settings.export.history_length)
    params = export_params(enc, es, settings.export.history_length, settings.export.encoder)
    d = cache.needs_export(
        [db], settings.training_dir / f"{KEY}.npz", "square8", 3, params=params, snapshots=snaps
    )
    needed, reason = d
    return needed, reason


def last_json(text: str) -> dict[str, object]:
    """The JSON line of the output (unconfigured structlog also prints to stdout in tests)."""
    line = [ln for ln in text.splitlines() if ln.startswith("{")][-1]
    out: dict[str, object] = json.loads(line)
    return out


def usable_ids(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT game_id FROM games WHERE board_type='square8' AND num_players=3"
            " AND game_status='completed' AND winner IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    return {r[0] for r in rows}


def test_real_db_exports_exactly_the_usable_games_then_hits_then_misses(
    real_db: Path, tmp_path: Path
) -> None:
    s = make_settings(tmp_path, real_db)
    first = run_export(s, KEY)
    assert not first.cache_hit and first.games == 5 and first.samples > 0
    assert first.skipped["orphans_in_sources"] == 2
    with np.load(first.output, allow_pickle=False) as z:
        ids = set(z["game_ids"].tolist())
        assert ids == {game_id_hash(g) for g in usable_ids(real_db)}
        assert "features" not in z.files and str(z["feature_layout"]) == "cells"
        cells, const = z["feature_cells"], z["feature_constant"]
        assert cells.dtype == np.int16 and cells.shape == (first.samples, 65)  # one cell index per plane
        assert const.dtype == np.uint8 and const.shape == (65, 8, 8)
        assert int(const[-1].sum()) == 64 and not const[:-1].any()  # the board mask, last
        assert int(cells.min()) >= -1 and int(cells.max()) < 64 and (cells[:, -1] == -1).all()
        assert int(z["format_version"]) == 3
        assert str(z["config_key"]) == KEY and int(z["num_players"]) == 3
        v = z["values_mp"]
        assert set(np.unique(v[:, :3]).tolist()) <= {-1.0, 0.0, 1.0} and np.all(v[:, 3] == 0)
    arrays = open_training_file(first.output)  # the trainer's own reader memory-maps it
    assert arrays.n == first.samples
    second = run_export(s, KEY)
    assert second.cache_hit and second.samples == first.samples and "cache hit" in second.reason
    new_id = append_game(real_db, seed=7)
    third = run_export(s, KEY)
    assert not third.cache_hit and third.games == 6 and "source changed" in third.reason
    with np.load(third.output, allow_pickle=False) as z:
        assert game_id_hash(new_id) in set(z["game_ids"].tolist())


def test_status_update_invalidates(real_db: Path, tmp_path: Path) -> None:
    s = make_settings(tmp_path, real_db)
    gid = append_game(real_db, seed=3, status="active")
    assert run_export(s, KEY).games == 5  # the active game is not usable
    assert needs(s, real_db) == (False, needs(s, real_db)[1])
    conn = sqlite3.connect(real_db)
    with conn:
        conn.execute("UPDATE games SET game_status='completed', winner=2 WHERE game_id=?", (gid,))
    conn.close()
    needed, reason = needs(s, real_db)
    assert needed and reason.startswith("status update"), reason
    assert run_export(s, KEY).games == 6


def test_replaced_db_invalidates(real_db: Path, tmp_path: Path) -> None:
    s = make_settings(tmp_path, real_db)
    run_export(s, KEY)
    copy = tmp_path / "copy.db"
    shutil.copyfile(real_db, copy)
    os.replace(copy, real_db)  # same content, another file
    needed, reason = needs(s, real_db)
    assert needed and reason.startswith("source replaced"), reason


def test_output_deleted_or_modified_invalidates(real_db: Path, tmp_path: Path) -> None:
    s = make_settings(tmp_path, real_db)
    out = run_export(s, KEY).output
    out.unlink()
    needed, reason = needs(s, real_db)
    assert needed and reason.startswith("output missing")
    run_export(s, KEY)
    with open(out, "ab") as f:
        f.write(b"x")
    needed, reason = needs(s, real_db)
    assert needed and reason.startswith("output modified")
    assert not run_export(s, KEY).cache_hit
    assert run_export(s, KEY).cache_hit


def test_parameter_change_and_force_invalidate(real_db: Path, tmp_path: Path) -> None:
    s = make_settings(tmp_path, real_db)
    run_export(s, KEY)
    s2 = make_settings(tmp_path, real_db, history_length=2)
    r = run_export(s2, KEY)
    assert not r.cache_hit and "history_length 4 -> 2" in r.reason
    assert run_export(s2, KEY).cache_hit
    r = run_export(s2, KEY, force=True)
    assert not r.cache_hit and "force" in r.reason


def test_torn_cache_file_means_export_again(real_db: Path, tmp_path: Path) -> None:
    s = make_settings(tmp_path, real_db)
    run_export(s, KEY)
    cache_file = s.training_dir / ".export_cache.json"
    cache_file.write_bytes(cache_file.read_bytes()[:40])
    r = run_export(s, KEY)
    assert not r.cache_hit and "torn" in r.reason
    assert run_export(s, KEY).cache_hit


def test_game_inserted_during_export_is_exported_next_time(real_db: Path, tmp_path: Path) -> None:
    s = make_settings(tmp_path, real_db)
    inserted: list[str] = []

    def progress(done: int, total: int) -> None:
        if not inserted:
            inserted.append(append_game(real_db, seed=11))

    r = run_export(s, KEY, progress=progress)
    assert inserted and r.games == 5  # the snapshot was taken before the insert
    with np.load(r.output, allow_pickle=False) as z:
        assert game_id_hash(inserted[0]) not in set(z["game_ids"].tolist())
    r2 = run_export(s, KEY)
    assert not r2.cache_hit and r2.games == 6
    with np.load(r2.output, allow_pickle=False) as z:
        assert game_id_hash(inserted[0]) in set(z["game_ids"].tolist())


def test_wal_checkpoint_keeps_the_cache(tmp_path: Path) -> None:
    db = tmp_path / "wal.db"
    write_games(db, KEY, 12, seed=5)
    s = make_settings(tmp_path, db)
    assert not run_export(s, KEY).cache_hit
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert run_export(s, KEY).cache_hit


def test_cli_json_bad_key_and_failure(
    real_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = make_settings(tmp_path, real_db)
    assert cli_export(s, KEY, False, None, True) == EXIT_OK
    out = last_json(capsys.readouterr().out)
    assert out["config"] == KEY and out["cache_hit"] is False and out["games"] == 5
    assert set(out) >= {"samples", "skipped", "output", "seconds", "bytes"}
    assert cli_export(s, "square9_2p", False, None, True) == EXIT_BAD_ARGS
    assert "error" in last_json(capsys.readouterr().out)
    missing = make_settings(tmp_path, tmp_path / "nope.db")
    assert cli_export(missing, KEY, False, None, True) == EXIT_FAILURE
    captured = capsys.readouterr()
    assert "nope.db" in str(last_json(captured.out)["error"]) and "nope.db" in captured.err
    with pytest.raises(ExportError, match=r"nope\.db"):
        run_export(missing, KEY)


class DenseCountsEncoder(MoveHistoryEncoder):
    """A plug-in whose planes are counts, not bits: stored dense, never as cells."""

    name = "dense-counts"
    feature_layout = "dense"

    def encode_game(self, game: Game, sample_every: int = 1) -> EncodedGame:
        out = MoveHistoryEncoder(self.history_length).encode_game(game, sample_every)
        out.features = cells_to_dense(out.features, self.feature_constant("square8")) * np.uint8(3)
        return out

    encode_games = None  # type: ignore[assignment]  # per game only


def test_dense_plugin_encoder_exports_and_trains_dense(real_db: Path, tmp_path: Path) -> None:
    s = make_settings(tmp_path, real_db, encoder=f"{__name__}:DenseCountsEncoder")
    r = run_export(s, KEY)
    with np.load(r.output, allow_pickle=False) as z:
        assert "feature_cells" not in z.files and "feature_constant" not in z.files
        assert str(z["feature_layout"]) == "dense"
        assert z["features"].shape == (r.samples, 65, 8, 8) and int(z["features"].max()) == 3
    arrays = open_training_file(r.output)
    assert not arrays.packed and arrays.input_shape == (65, 8, 8)


class CellsWithoutConstant(MoveHistoryEncoder):
    name = "cells-no-constant"
    feature_constant = None  # type: ignore[assignment]


class CellsBadConstant(MoveHistoryEncoder):
    name = "cells-bad-constant"

    def feature_constant(self, board: str) -> np.ndarray:
        return np.full((self.num_planes, 8, 8), 2, dtype=np.uint8)


class CellsOutOfRange(MoveHistoryEncoder):
    name = "cells-out-of-range"

    def encode_games(self, games: Sequence[Game], sample_every: int = 1) -> EncodedGame:
        out = super().encode_games(games, sample_every)
        out.features[:, 0] = 64  # one past the last cell of square8
        return out


@pytest.mark.parametrize(
    "cls, match",
    [
        ("CellsWithoutConstant", "cells layout needs feature_constant"),
        ("CellsBadConstant", "feature_constant planes must be 0/1"),
        ("CellsOutOfRange", r"feature_cells outside \[-1, 64\)"),
    ],
)
def test_cells_plugin_that_breaks_the_layout_fails_and_keeps_the_output(
    real_db: Path, tmp_path: Path, cls: str, match: str
) -> None:
    good = run_export(make_settings(tmp_path, real_db), KEY)
    before = good.output.read_bytes()
    s = make_settings(tmp_path, real_db, encoder=f"{__name__}:{cls}")
    with pytest.raises(ExportError, match=match):
        run_export(s, KEY)
    assert good.output.read_bytes() == before
