"""The export job: snapshot -> cache check -> stream games -> encode -> NPZ -> record.

The source snapshot is taken **before** exporting and exactly that snapshot is
exported (``iter_games(upto_rowid=watermark)``); the cache records that same
snapshot, so a game that arrives during an export makes the next check a miss.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from daemon.data.fingerprint import Fingerprint, fingerprints
from daemon.data.gamedb import GameDBError, SourceSnapshot
from daemon.data.sources import expand, snapshot_readable
from daemon.export.cache import ExportCache, sources_record
from daemon.export.encoder import Encoder, EncoderError, load_encoder
from daemon.export.params import (
    GAME_FILTER,
    ExportError,
    array_specs,
    export_params,
    feature_constant,
    feature_layout,
    output_layout,
)
from daemon.export.quick import quick_hit
from daemon.export.rows import RowsError, check_encoded, row_arrays
from daemon.export.segments import SegmentExport
from daemon.export.serial import newest_games, serial_rows
from daemon.export.tiers import ExportSettings, get_export_settings, take_snapshots
from daemon.export.workers import (
    TASK_GAMES,
    Output,
    WorkerError,
    export_sources,
    parallel_segments,
    plan_tasks,
)
from daemon.keys import geometry, parse_config_key, validate_config_key
from daemon.npz import format as fmt
from daemon.npz.dense import LayoutError, rewrite_layout
from daemon.npz.format import FORMAT_VERSION, LAYOUT_CELLS
from daemon.npz.writer import ExportWriteError, NpzStreamWriter
from daemon.settings import Settings

log = structlog.get_logger(__name__)
__all__ = [
    "GAME_FILTER",
    "ExportError",
    "ExportResult",
    "array_specs",
    "export_params",
    "feature_constant",
    "feature_layout",
    "run_export",
]

Progress = Callable[[int, int], None]
# Snapshots of the readable paths and the error of each other one (sources.snapshot_readable).
Refresh = Callable[[Sequence[Path]], tuple[dict[str, SourceSnapshot], dict[str, GameDBError]]]


@dataclass
class ExportResult:
    config: str
    cache_hit: bool
    games: int
    samples: int
    skipped: dict[str, int]
    output: Path
    bytes: int
    seconds: float
    reason: str
    settings: ExportSettings | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "cache_hit": self.cache_hit,
            "games": self.games,
            "samples": self.samples,
            "skipped": dict(self.skipped),
            "output": str(self.output),
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "reason": self.reason,
        }


def _export(
    db_paths: Sequence[Path],
    snapshots: Mapping[str, SourceSnapshot],
    key: str,
    output: Path,
    encoder: Encoder,
    es: ExportSettings,
    params: dict[str, Any],
    *,
    min_free_bytes: int,
    progress: Progress | None,
    now: datetime,
    workers: int = 1,
    segments_root: Path | None = None,
    rebuild: bool = False,
) -> tuple[int, int, dict[str, int], int, str]:
    board, n = parse_config_key(key)
    specs = array_specs(encoder, board)
    policy_size = encoder.policy_size(board)
    total = sum(s.configs[key].usable_games for s in snapshots.values() if key in s.configs)
    target = total if es.max_games is None else min(total, es.max_games)
    skipped: dict[str, int] = {}
    for snap in snapshots.values():
        cs = snap.configs.get(key)
        for name, count in (cs.skipped.as_dict() if cs else {}).items():
            skipped[name] = skipped.get(name, 0) + count
    skipped["beyond_max_games"] = total - target
    # Orphan move sets of the whole sources (their config is only a guess): reported, never exported.
    skipped["orphans_in_sources"] = sum(len(s.orphans) for s in snapshots.values())
    feature_key = next(iter(specs))
    grid = geometry(board).grid
    layout = feature_layout(encoder)
    constants = {fmt.FEATURE_CONSTANT: feature_constant(encoder, board)} if layout == LAYOUT_CELLS else {}
    writer = NpzStreamWriter(output, specs, min_free_bytes=min_free_bytes)
    writer.start(es.estimated_samples)
    games = 0
    reported = 0

    def tally(n_games: int, skips: Mapping[str, int]) -> None:
        nonlocal games, reported
        for name, c in skips.items():
            skipped[name] = skipped.get(name, 0) + c
        games += n_games
        if progress is not None and (games - reported >= 64 or games == target):
            reported = games
            progress(games, target)

    seg = _segment_export(segments_root, db_paths, snapshots, key, params, es.max_games)

    def seg_out(path: str) -> Output:
        return Output(path, tuple(specs.items()), policy_size, grid * grid)

    try:
        if seg is not None:  # reuse the encoded segments, encode the rest
            seg.run(writer, seg_out, workers=workers, rebuild=rebuild, tally=tally)
        elif workers > 1 and target >= workers * TASK_GAMES:  # else starting workers costs more than it saves
            tasks = plan_tasks(
                db_paths,
                snapshots,
                key,
                es.max_games,
                encoder=str(params["encoder_spec"]),
                history_length=int(params["history_length"]),
                sample_every=es.sample_every,
            )

            def task_output(i: int) -> Output:
                path = str(writer.segment_path(str(i)))
                return Output(path, tuple(specs.items()), policy_size, grid * grid)

            done = parallel_segments(tasks, workers, task_output)
            with contextlib.closing(done):  # a failed write stops the workers now
                for d in done:
                    writer.adopt(d.segment)
                    tally(d.games, d.skipped)
        else:
            rows = serial_rows(newest_games(db_paths, snapshots, key, es.max_games), encoder, es.sample_every)
            with contextlib.closing(rows):  # closes the source connections now, even on failure
                for game_ids, enc, defects in rows:
                    check_encoded(encoder, enc, specs, policy_size, game_ids[0], grid * grid)
                    writer.append(row_arrays(feature_key, game_ids, enc))
                    for name, count in defects.items():  # source rows the reader could not use
                        skipped[name] = skipped.get(name, 0) + count
                    tally(len(game_ids), enc.skipped)
        meta: dict[str, Any] = {
            fmt.META_BOARD_TYPE: board,
            fmt.META_CONFIG_KEY: key,
            fmt.META_NUM_PLAYERS: n,
            "encoder_name": encoder.name,
            "encoder_version": encoder.version,
            "history_length": int(params["history_length"]),
            fmt.META_POLICY_SIZE: policy_size,
            fmt.META_NUM_PLANES: encoder.num_planes,
            fmt.META_NUM_GLOBALS: encoder.num_globals,
            fmt.META_FEATURE_LAYOUT: layout,
            fmt.META_FEATURE_HEIGHT: grid,
            fmt.META_FEATURE_WIDTH: grid,
            "source_snapshot": json.dumps(sources_record(snapshots, key), sort_keys=True),
            "export_params": json.dumps(params, sort_keys=True),
            "created_at": now.isoformat(),
            fmt.META_FORMAT_VERSION: FORMAT_VERSION,
        }
        size, digest = writer.finish(meta, constants)
        if seg is not None:
            seg.commit()
    except BaseException:
        writer.abort()
        if seg is not None:
            seg.abort()
        raise
    return games, writer.rows, skipped, size, digest


def _segment_export(
    root: Path | None,
    db_paths: Sequence[Path],
    snapshots: Mapping[str, SourceSnapshot],
    key: str,
    params: dict[str, Any],
    max_games: int | None,
) -> SegmentExport | None:
    """The incremental export (``export.incremental``), when the config has games to export."""
    sources = export_sources(db_paths, snapshots, key)
    if root is None or not sources:
        return None
    return SegmentExport(root, key, sources, snapshots, params, max_games)


def _hit(
    key: str,
    out: Path,
    e: dict[str, Any],
    es: ExportSettings,
    t0: float,
    reason: str,
    record: dict[str, Any] | None = None,
) -> ExportResult:
    """The result of a cache hit: what the recorded export holds."""
    result = ExportResult(
        key,
        True,
        int(e.get("games", 0)),
        int(e["samples"]),
        dict(e.get("skipped", {})),
        out,
        int(e["output"]["size"]),
        time.monotonic() - t0,
        reason,
        es,
        record if record is not None else dict(e["sources"]),
        e["output"].get("sha256"),
    )
    log.info("export.cache_hit", config=key, output=str(out), samples=result.samples, reason=reason)
    return result


def run_export(
    settings: Settings,
    config_key: str,
    *,
    force: bool = False,
    output: Path | None = None,
    progress: Progress | None = None,
    db_paths: Sequence[Path] | None = None,
    snapshots: Mapping[str, SourceSnapshot] | None = None,
    refresh: Refresh | None = None,
    now: datetime | None = None,
) -> ExportResult:
    """Export ``config_key`` unless the cache says nothing changed. Raises on failure (nothing replaced).

    ``refresh`` (the service's warm sources) takes the snapshots of the configured sources
    instead of a fresh full scan. Unless ``snapshots`` are given, a cache hit is first checked
    by commit fingerprints alone (:mod:`daemon.export.quick`): no game is read.
    """
    key = validate_config_key(config_key)
    board, n = parse_config_key(key)
    paths = [Path(p).absolute() for p in (db_paths if db_paths is not None else expand(settings.game_dbs))]
    out = Path(output) if output is not None else settings.training_dir / f"{key}.npz"
    t0 = time.monotonic()
    try:
        encoder = load_encoder(settings.export.encoder, settings.export.history_length)
        hist, spec = settings.export.history_length, settings.export.encoder
        layout = settings.export.feature_layout  # None: the encoder's own
        cache = ExportCache(settings.training_dir / ".export_cache.json")
        unreadable: list[str] = []
        # Before any snapshot: a commit after this point makes the next quick check miss.
        fps: dict[str, Fingerprint | None] | None = None
        if snapshots is None:
            fps = fingerprints(paths, int((now or datetime.now(UTC)).timestamp() * 1e9))
            hit = (
                None
                if force
                else quick_hit(
                    cache, key, out, board, n, fps, lambda es: export_params(encoder, es, hist, spec, layout)
                )
            )
            if hit is not None:
                reason = "cache hit: no commit to any source since the export"
                return _hit(key, out, hit[0], hit[1], t0, reason)
        if snapshots is not None:
            snaps = dict(snapshots)
        elif db_paths is None:  # the configured sources: a broken one must not stop the others
            snaps, failed = (refresh or snapshot_readable)(paths)
            for path, err in failed.items():
                log.warning("export.source_skipped", config=key, source=path, reason=str(err), kind=err.kind)
            paths, unreadable = [p for p in paths if str(p) in snaps], list(failed)
        else:  # sources named by the caller: each must be readable
            snaps = take_snapshots(paths)  # BEFORE exporting
        es = get_export_settings(paths, board, n, snapshots=snaps)
        params = export_params(encoder, es, hist, spec, layout)
        decision = cache.needs_export(paths, out, board, n, force, params=params, snapshots=snaps)
        record = sources_record(snaps, key)
        if not decision.needed and decision.entry is not None:
            if fps is not None and not unreadable and all(fps.values()):
                # The full check proved these fingerprints current: the next hit is a quick one.
                cache.note_fingerprints(key, out, decision.entry, fps)
            return _hit(key, out, decision.entry, es, t0, decision.reason, record)
        log.info(
            "export.started",
            config=key,
            output=str(out),
            reason=decision.reason,
            tier=es.data_tier,
            usable_games=es.usable_games,
            sample_every=es.sample_every,
            max_games=es.max_games,
        )
        games, samples, skipped, size, digest = _export(
            paths,
            snaps,
            key,
            out,
            encoder,
            es,
            params,
            min_free_bytes=settings.export.min_free_bytes,
            progress=progress,
            now=now or datetime.now(UTC),
            workers=settings.export.workers,
            segments_root=settings.training_dir / ".segments" if settings.export.incremental else None,
            rebuild=force,
        )
        final = output_layout(encoder, layout)
        if final != feature_layout(encoder):  # e.g. dense for trainers outside this project
            size, digest = rewrite_layout(out, final, min_free_bytes=settings.export.min_free_bytes)
        if unreadable:
            skipped["unreadable_sources"] = len(unreadable)
        cache.record_export(
            paths,
            out,
            board,
            n,
            samples,
            params=params,
            snapshots=snaps,
            games=games,
            skipped=skipped,
            sha256=digest,
            now=now,
            fingerprints=None if unreadable else fps,
        )
    except Exception as e:  # any failure (source, encoder plug-in, disk): logged, nothing replaced
        log.error(
            "export.failed",
            config=key,
            output=str(out),
            error=str(e),
            seconds=round(time.monotonic() - t0, 3),
        )
        if isinstance(e, ExportError):
            raise
        known = (GameDBError, EncoderError, ExportWriteError, WorkerError, RowsError, LayoutError, OSError)
        if isinstance(e, known):
            raise ExportError(str(e)) from e
        raise ExportError(f"{type(e).__name__}: {e}") from e
    result = ExportResult(
        key,
        False,
        games,
        samples,
        skipped,
        out,
        size,
        time.monotonic() - t0,
        decision.reason,
        es,
        record,
        digest,
    )
    log.info(
        "export.finished",
        config=key,
        output=str(out),
        games=games,
        samples=samples,
        bytes=size,
        seconds=round(result.seconds, 3),
        skipped=skipped,
    )
    return result
