"""Parallel export (``export.workers``): the same bytes as a serial export; failures lose nothing."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.data.gamedb import Game
from daemon.export import job
from daemon.export.encoder import EncodedGame, MoveHistoryEncoder
from daemon.export.job import ExportError, run_export
from daemon.export.serial import newest_games
from daemon.export.tiers import take_snapshots
from daemon.export.workers import TASK_GAMES, plan_tasks
from daemon.selfplay_sim import write_games
from daemon.settings import Settings, settings_from_mapping

KEY = "square8_2p"
NOW = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("srcs")
    paths = [d / "a.db", d / "b.db"]
    write_games(paths[0], KEY, 300, seed=11)
    write_games(paths[1], KEY, 120, seed=100_000)  # seeds far apart: distinct game ids
    return paths


def settings(
    tmp: Path, dbs: Sequence[Path], workers: int, encoder: str = "builtin", *, incremental: bool = False
) -> Settings:
    """The full export's settings (segments off) unless ``incremental``."""
    return settings_from_mapping(
        {
            "data_dir": str(tmp / f"data{workers}"),
            "game_dbs": [str(p) for p in dbs],
            "export": {
                "min_free_bytes": 0,
                "workers": workers,
                "encoder": encoder,
                "incremental": incremental,
            },
        }
    )


def store_files(data: Path) -> dict[str, bytes]:
    """Every file of the segment stores under ``data`` with its bytes."""
    root = data / "training" / ".segments"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("max_games", [None, 1, TASK_GAMES, TASK_GAMES + 1, 333])
def test_tasks_cover_exactly_the_serial_games_in_order(sources: list[Path], max_games: int | None) -> None:
    snaps = take_snapshots(sources)
    by_id: dict[str, str] = {}
    for path in sources:
        by_id.update({g.game_id: str(path) for g in newest_games([path], snaps, KEY, None)})
    serial = [(by_id[g.game_id], g.rowid) for g in newest_games(sources, snaps, KEY, max_games)]
    plan = plan_tasks(sources, snaps, KEY, max_games, encoder="builtin", history_length=4, sample_every=1)
    tasks = list(plan)
    planned = [(t.path, r) for t in tasks for r in t.rowids]
    assert planned == serial and len(serial) == (max_games or len(serial))
    assert all(0 < len(t.rowids) <= TASK_GAMES for t in tasks)


def test_small_exports_stay_in_process(
    sources: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fewer games than one task per worker: starting workers would cost more than it saves.
    monkeypatch.setattr(job, "parallel_segments", None)  # would raise if called
    r = run_export(settings(tmp_path, sources[1:], 2), KEY, now=NOW)
    assert 0 < r.games < 2 * TASK_GAMES


def test_two_workers_write_the_same_bytes_as_one(sources: list[Path], tmp_path: Path) -> None:
    one = run_export(settings(tmp_path, sources, 1), KEY, now=NOW)
    two = run_export(settings(tmp_path, sources, 2), KEY, now=NOW)
    assert one.games == two.games > 300 and one.samples == two.samples > 0
    assert one.skipped == two.skipped
    assert one.sha256 == two.sha256 and one.output.read_bytes() == two.output.read_bytes()
    again = run_export(settings(tmp_path, sources, 2), KEY, now=NOW)
    assert again.cache_hit


class PerGameEncoder(MoveHistoryEncoder):
    """A plug-in without ``encode_games``: workers encode one game per call."""

    name = "per-game"
    encode_games = None  # type: ignore[assignment]

    def encode_game(self, game: Game, sample_every: int = 1) -> EncodedGame:
        return MoveHistoryEncoder(self.history_length).encode_game(game, sample_every)


def test_per_game_plugin_in_workers_matches_serial(sources: list[Path], tmp_path: Path) -> None:
    spec = f"{__name__}:PerGameEncoder"
    one = run_export(settings(tmp_path, sources, 1, spec), KEY, now=NOW)
    two = run_export(settings(tmp_path, sources, 2, spec), KEY, now=NOW)
    assert one.samples > 0 and one.output.read_bytes() == two.output.read_bytes()


class FailingEncoder(MoveHistoryEncoder):
    name = "fails-in-worker"

    def encode_games(self, games: Sequence[Game], sample_every: int = 1) -> EncodedGame:
        if any(g.rowid % 7 == 0 for g in games):
            raise ValueError("planted encoder failure")
        return super().encode_games(games, sample_every)


class DyingEncoder(MoveHistoryEncoder):
    name = "dies-in-worker"

    def encode_games(self, games: Sequence[Game], sample_every: int = 1) -> EncodedGame:
        os.kill(os.getpid(), signal.SIGKILL)  # a worker killed mid-export (OOM killer, operator)
        raise AssertionError("unreachable")


@pytest.mark.parametrize("incremental", [False, True])
@pytest.mark.parametrize(
    "cls, match",
    [("FailingEncoder", "ValueError: planted encoder failure"), ("DyingEncoder", "worker process died")],
)
def test_a_failing_or_killed_worker_fails_the_export_and_keeps_the_previous_file(
    sources: list[Path], tmp_path: Path, cls: str, match: str, incremental: bool
) -> None:
    good = run_export(settings(tmp_path, sources, 2, incremental=incremental), KEY, now=NOW)
    before = good.output.read_bytes()
    cache = good.output.parent / ".export_cache.json"
    cache_before = cache.read_bytes()
    stores = store_files(tmp_path / "data2") if incremental else {}
    assert bool(stores) == incremental
    bad = settings(tmp_path, sources, 2, f"{__name__}:{cls}", incremental=incremental)
    with pytest.raises(ExportError, match=match):
        run_export(bad, KEY, force=True)
    assert good.output.read_bytes() == before and cache.read_bytes() == cache_before
    leftovers = {p.name for p in good.output.parent.iterdir()} - {".export_cache.json.lock"}
    assert leftovers == {".export_cache.json", f"{KEY}.npz", *([".segments"] if incremental else [])}
    # No temporary file left, and the segment stores exactly as the good export left them.
    if incremental:
        assert store_files(tmp_path / "data2") == stores
