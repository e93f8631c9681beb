"""Parallel export: worker processes read and encode blocks of games; the parent writes them.

With ``export.workers: N`` (N > 1) the exporting process lists the selected games
(their merge keys only, no moves) in exactly the serial order, cuts that list into
tasks of :data:`TASK_GAMES` games of one source, and N worker processes each read
their task's games (``GameDB.iter_games(rowids=...)``), encode them and write the
rows to a segment file beside the output (under the writer's temporary prefix, so
a failed export removes it). The parent keeps at most ``2 x N`` tasks in flight and
adopts the segments in task order, so the file is byte-identical to a serial export,
memory stays bounded, and no rows cross a pipe.

Workers come from the ``forkserver`` start method (never ``fork``: the service runs
threads), which imports this module once per service process, so a later export
pays only for forking warm workers. The pool lives for one export.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import multiprocessing
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from daemon.data.gamedb import Game, GameDB, SourceSnapshot
from daemon.export.encoder import load_encoder
from daemon.export.rows import check_encoded, row_arrays
from daemon.npz.format import ArraySpec
from daemon.npz.writer import Segment, write_segment
from daemon.training.pdeathsig import set_parent_death_signal

TASK_GAMES = 128  # a task's rows stay small (square8: ~7K samples x 235 B)


class WorkerError(Exception):
    """A worker's failure, re-raised in the parent (plain args: always picklable)."""


@dataclass(frozen=True)
class Task:
    path: str
    config_key: str
    upto_rowid: int
    rowids: tuple[int, ...]  # in output order
    encoder: str
    history_length: int
    sample_every: int
    # The snapshot's file (st_dev, st_ino): a worker reads that file or fails, never another one
    # moved into place since (it opens the path again, as a serial export does not).
    identity: tuple[int, int] | None = None


@dataclass(frozen=True)
class Output:
    """Where a task's rows go and what they must satisfy (the parent writer's specs)."""

    path: str  # the segment file to create
    specs: tuple[tuple[str, ArraySpec], ...]
    policy_size: int
    cells: int  # grid cells: feature_cells must be in [-1, cells)


@dataclass(frozen=True)
class Done:
    segment: Segment
    games: int
    skipped: dict[str, int]


def encode_task(task: Task, out: Output) -> Done:
    """Worker side: read exactly ``task.rowids``, encode them in order, write one segment."""
    try:
        encoder = load_encoder(task.encoder, task.history_length)
        found = GameDB(Path(task.path)).iter_games(
            task.config_key, upto_rowid=task.upto_rowid, rowids=task.rowids, identity=task.identity
        )
        by_rowid = {g.rowid: g for g in found}
        # A game deleted since it was listed is skipped, as a serial export would.
        games = [by_rowid[r] for r in task.rowids if r in by_rowid]
        encode_games = getattr(encoder, "encode_games", None)
        if encode_games is None:
            blocks = [([g.game_id], encoder.encode_game(g, task.sample_every)) for g in games]
        else:
            blocks = [([g.game_id for g in games], encode_games(games, task.sample_every))] if games else []
        specs = dict(out.specs)
        feature_key = next(iter(specs))
        skipped = defects_of(games)
        arrays = []
        for ids, enc in blocks:
            check_encoded(encoder, enc, specs, out.policy_size, ids[0], out.cells)
            arrays.append(row_arrays(feature_key, ids, enc))
            for name, count in enc.skipped.items():
                skipped[name] = skipped.get(name, 0) + count
        return Done(write_segment(Path(out.path), specs, arrays), len(games), skipped)
    except Exception as e:  # re-raised by the parent; custom exception types may not unpickle
        raise WorkerError(f"{type(e).__name__}: {e}") from None


Source = tuple[str, int, tuple[int, int] | None]  # path, watermark, identity of its snapshot


def export_sources(
    db_paths: Sequence[Path], snapshots: Mapping[str, SourceSnapshot], key: str
) -> list[Source]:
    """The sources with usable games of ``key`` in their snapshot, in order, each with the
    snapshot's watermark and file identity (an export reads exactly that file, up to there)."""
    out: list[Source] = []
    for path in db_paths:
        snap = snapshots[str(path)]
        cs = snap.configs.get(key)
        if cs is not None and cs.usable_games > 0:
            out.append((str(path), cs.watermark, snap.identity))
    return out


def selected(sources: Sequence[Source], key: str, max_games: int | None) -> Generator[tuple[int, int]]:
    """``(rowid, source index)`` of the games an export takes, in the serial export's order.

    Newest first across sources (the same merge key and tie order as the serial export), at
    most ``max_games``: of each source, the newest games by rowid.
    """
    streams = [
        GameDB(Path(path)).iter_game_keys(
            key, upto_rowid=wm, newest_first=True, limit=max_games, identity=identity
        )
        for path, wm, identity in sources
    ]
    tagged = [_tag(s, i) for i, s in enumerate(streams)]
    merged = tagged[0] if len(tagged) == 1 else heapq.merge(*tagged, key=lambda t: t[:2], reverse=True)
    try:
        for _, rowid, i in itertools.islice(merged, max_games):
            yield rowid, i
    finally:
        for s in streams:  # close each source's read connection, even when stopping early
            close = getattr(s, "close", None)
            if close is not None:
                close()


def plan_tasks(
    db_paths: Sequence[Path],
    snapshots: Mapping[str, SourceSnapshot],
    key: str,
    max_games: int | None,
    *,
    encoder: str,
    history_length: int,
    sample_every: int,
) -> Iterator[Task]:
    """Tasks covering the usable games of the snapshot in the serial export's order."""
    sources = export_sources(db_paths, snapshots, key)
    games = selected(sources, key, max_games)
    with contextlib.closing(games):
        batch: list[int] = []
        source = -1
        for rowid, i in games:
            if batch and (i != source or len(batch) >= TASK_GAMES):
                yield task_of(sources[source], key, batch, encoder, history_length, sample_every)
                batch = []
            batch.append(rowid)
            source = i
        if batch:
            yield task_of(sources[source], key, batch, encoder, history_length, sample_every)


def _tag(keys: Iterator[tuple[str, int]], source: int) -> Iterator[tuple[str, int, int]]:
    for created, rowid in keys:
        yield created, rowid, source


def task_of(
    source: Source,
    key: str,
    rowids: list[int],
    encoder: str,
    history_length: int,
    every: int,
) -> Task:
    path, watermark, identity = source
    return Task(path, key, watermark, tuple(rowids), encoder, history_length, every, identity)


def defects_of(games: Sequence[Game]) -> dict[str, int]:
    """Rows the reader could not use in ``games``, summed by reason (export ``skipped`` keys)."""
    out: dict[str, int] = {}
    for g in games:
        for name, count in g.defects.items():
            out[name] = out.get(name, 0) + count
    return out


def parallel_segments(
    tasks: Iterator[Task], workers: int, output: Callable[[int], Output]
) -> Generator[Done]:
    """Tasks done by ``workers`` processes, in task order, at most 2 x workers in flight.

    ``output(i)`` says where task ``i`` writes its rows.
    """
    ctx = multiprocessing.get_context("forkserver")
    # The forkserver and every worker die with their parent (kill -9 of the service included).
    ctx.set_forkserver_preload(["daemon.export._deathsig", __name__])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=set_parent_death_signal)
    pending: deque[Future[Done]] = deque()
    try:
        for i, task in enumerate(tasks):
            pending.append(pool.submit(encode_task, task, output(i)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as e:
        raise WorkerError(f"an export worker process died: {e}") from None
    finally:  # waits for running tasks, so the caller's cleanup sees every segment file
        pool.shutdown(wait=True, cancel_futures=True)
