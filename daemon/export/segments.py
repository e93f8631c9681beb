"""Incremental export: encoded rows of finished games kept as immutable segments, reused.

A finished game never changes, so its encoded rows can be kept. Each segment file holds the
rows of up to :data:`~daemon.export.workers.TASK_GAMES` usable games of one source (in the
export's order, newest first) and is keyed, through its store directory, by the source's
file identity, the config and every parameter the encoding depends on (encoder spec, name
and version, history length, sample_every, layout, format). The store's manifest records per
segment the inclusive rowid range ``[lo, hi]`` of its games and their count and rowid sum.

An export selects the games a full export takes (headers only, the same rule and the same
merge across sources, newest first, at most ``max_games``: of each source, its newest games),
keeps each segment whose range still holds exactly selected games it encoded (a status update
that makes a game in an encoded range usable, a deletion, or the window of ``max_games``
sliding past part of its range drops that segment), encodes only the selected games no kept
segment covers (worker processes as the full export does), and assembles the NPZ from the
segments, each source's in rowid order, newest first. From one source that is the full
export's file byte for byte; from several, the same samples, grouped by source (the full
export interleaves them by creation time; the trainer splits by game hash, never by
position). A window that slides re-encodes at most one segment's games per source (the one
it cuts). Only the segments of the current export stay on disk (their bytes are those of the
output); a replaced source or other parameters start a new store and the old one is removed.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from daemon.data.errors import DatabaseReplaced
from daemon.data.gamedb import SourceSnapshot
from daemon.export.workers import (
    TASK_GAMES,
    Done,
    Output,
    Source,
    encode_task,
    parallel_segments,
    selected,
    task_of,
)
from daemon.npz.writer import NpzStreamWriter, Segment, fsync_dir

log = structlog.get_logger(__name__)
STORE_FORMAT = 1
MANIFEST = "manifest.json"
# More segments than this many per TASK_GAMES games (plus a floor): many small deltas piled up;
# encode everything again into full-size segments (bounds the files an assembly opens).
_COMPACT_FACTOR, _COMPACT_FLOOR = 2, 64
# Parameters that change no game's rows (the window and the filter text) stay out of the key.
_NOT_KEYED = ("max_games",)


@dataclass(frozen=True)
class Stored:
    """One segment of the manifest."""

    file: str
    lo: int
    hi: int
    count: int
    rowid_sum: int
    rows: int
    sizes: tuple[int, ...]
    games: int
    skipped: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "sizes": list(self.sizes)}


def store_dir(root: Path, key: str, snap: SourceSnapshot, params: Mapping[str, Any]) -> Path:
    """The store of one source's segments: its path, file identity and the keyed parameters."""
    keyed = {k: v for k, v in sorted(params.items()) if k not in _NOT_KEYED}
    ident = orjson.dumps({"path": snap.path, "identity": snap.identity, "params": keyed})
    return root / key / hashlib.sha256(ident).hexdigest()[:24]


def _load(store: Path) -> list[Stored]:
    try:
        data = orjson.loads((store / MANIFEST).read_bytes())
        if data.get("format") != STORE_FORMAT:
            return []
        out = []
        for s in data["segments"]:
            seg = Stored(**{**s, "sizes": tuple(s["sizes"])})
            if (store / seg.file).stat().st_size == sum(seg.sizes):
                out.append(seg)
        return out
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):  # torn or foreign: rebuild
        return []


def _save(store: Path, segments: list[Stored]) -> None:
    tmp = store / f".{MANIFEST}.{os.getpid()}.tmp"
    data = {"format": STORE_FORMAT, "segments": [s.as_json() for s in segments]}
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(data))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, store / MANIFEST)
    fsync_dir(store)


def _kept(segments: list[Stored], rowids: list[int]) -> list[Stored]:
    """Segments whose range still holds exactly the games they encoded (``rowids`` ascending)."""
    kept = []
    for s in segments:
        a, b = bisect.bisect_left(rowids, s.lo), bisect.bisect_right(rowids, s.hi)
        if b - a == s.count and sum(rowids[a:b]) == s.rowid_sum:
            kept.append(s)
    return kept


def _missing(rowids: list[int], kept: list[Stored]) -> list[int]:
    """The games (newest first) no kept segment covers."""
    covered = {
        r for s in kept for r in rowids[bisect.bisect_left(rowids, s.lo) : bisect.bisect_right(rowids, s.hi)]
    }
    return [r for r in reversed(rowids) if r not in covered]


def _batches(todo: list[int], kept: list[Stored]) -> Iterator[list[int]]:
    """``todo`` (descending) in batches that never span a kept segment's range."""
    his = sorted(s.hi for s in kept)
    batch: list[int] = []
    for r in todo:
        # A kept segment between the previous rowid and this one: its range must stay its own.
        split = bool(batch) and bisect.bisect_right(his, r) < bisect.bisect_left(his, batch[-1])
        if batch and (split or len(batch) >= TASK_GAMES):
            yield batch
            batch = []
        batch.append(r)
    if batch:
        yield batch


@dataclass
class _Part:
    """One source's share of an incremental export."""

    source: Source
    store: Path
    old: list[Stored]
    kept: list[Stored]
    made: list[Stored] = field(default_factory=list)

    def segments(self) -> list[Stored]:
        """Newest first: the order a full export writes this source's games in."""
        return sorted([*self.kept, *self.made], key=lambda s: s.hi, reverse=True)


class SegmentExport:
    """One incremental export of one config from its sources into ``writer``."""

    def __init__(
        self,
        root: Path,
        key: str,
        sources: Sequence[Source],
        snapshots: Mapping[str, SourceSnapshot],
        params: Mapping[str, Any],
        max_games: int | None,
    ) -> None:
        self.root, self.key, self.sources = root, key, list(sources)
        self.snapshots, self.params, self.max_games = snapshots, dict(params), max_games
        self._parts: list[_Part] = []
        self._new: list[Path] = []
        self._lockf: Any = None

    def run(
        self,
        writer: NpzStreamWriter,
        output: Callable[[str], Output],
        *,
        workers: int,
        rebuild: bool,
        tally: Callable[[int, dict[str, int]], None],
    ) -> None:
        """Adopt every segment of the export into ``writer`` (encoding what is missing).

        ``output(path)``: where and under which checks a new segment is written.
        """
        self._lock()
        picked: list[list[int]] = [[] for _ in self.sources]
        games = selected(self.sources, self.key, self.max_games)  # the full export's games
        with contextlib.closing(games):
            for rowid, i in games:
                picked[i].append(rowid)
        todo: list[tuple[_Part, list[int]]] = []
        for source, rowids in zip(self.sources, picked, strict=True):
            if not rowids:  # every game of this source is beyond the window
                continue
            rowids.reverse()  # each source's games came newest first
            store = store_dir(self.root, self.key, self.snapshots[source[0]], self.params)
            old = [] if rebuild else _load(store)
            kept = _kept(old, rowids)
            if len(kept) > _COMPACT_FACTOR * len(rowids) // TASK_GAMES + _COMPACT_FLOOR:
                kept = []
            part = _Part(source, store, old, kept)
            self._parts.append(part)
            store.mkdir(parents=True, exist_ok=True)
            for s in kept:
                tally(s.games, s.skipped)
            todo.extend((part, b) for b in _batches(_missing(rowids, kept), kept))
        self._encode(todo, workers, output, tally)
        for part in self._parts:
            for s in part.segments():
                writer.adopt(Segment(str(part.store / s.file), s.rows, s.sizes))
        log.info(
            "export.segments",
            config=self.key,
            sources=len(self._parts),
            kept=sum(len(p.kept) for p in self._parts),
            dropped=sum(len(p.old) - len(p.kept) for p in self._parts),
            encoded_games=sum(len(b) for _, b in todo),
            segments=sum(len(p.kept) + len(p.made) for p in self._parts),
            max_games=self.max_games,
        )

    def _encode(
        self,
        todo: list[tuple[_Part, list[int]]],
        workers: int,
        output: Callable[[str], Output],
        tally: Callable[[int, dict[str, int]], None],
    ) -> None:
        p = self.params
        tasks = [
            task_of(
                part.source,
                self.key,
                b,
                str(p["encoder_spec"]),
                int(p["history_length"]),
                int(p["sample_every"]),
            )
            for part, b in todo
        ]
        paths = [part.store / f"seg-{b[-1]}-{b[0]}-{secrets.token_hex(4)}.rows" for part, b in todo]

        def out(i: int) -> Output:
            self._new.append(paths[i])
            return output(str(paths[i]))

        if workers > 1 and len(tasks) >= workers:
            done: Iterator[Done] = parallel_segments(iter(tasks), workers, out)
        else:
            done = (encode_task(t, out(i)) for i, t in enumerate(tasks))
        with contextlib.closing(done):  # type: ignore[type-var]  # a failure stops the workers now
            for (part, b), path, d in zip(todo, paths, done, strict=True):
                with open(path, "rb+") as f:  # kept across exports: durable before the manifest
                    os.fsync(f.fileno())
                if d.games != len(b):  # listed from the snapshot, gone now: the file changed under it
                    raise DatabaseReplaced(
                        Path(part.source[0]),
                        f"{len(b) - d.games} listed games vanished during the export (replaced?)",
                    )
                seg = d.segment
                part.made.append(
                    Stored(path.name, b[-1], b[0], len(b), sum(b), seg.rows, seg.sizes, d.games, d.skipped)
                )
                tally(d.games, d.skipped)  # progress while encoding

    def commit(self) -> None:
        """After the NPZ is in place: record each store, drop every other file and store of the config."""
        for part in self._parts:
            segments = part.segments()
            _save(part.store, segments)
            keep = {s.file for s in segments} | {MANIFEST}
            for f in part.store.iterdir():
                if f.name not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()
        stores = {part.store for part in self._parts}
        for other in (self.root / self.key).iterdir():
            if other not in stores and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
        self._new = []
        self._unlock()

    def abort(self) -> None:
        """A failed export: its new segment files go; the store is as it was."""
        for path in self._new:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._new = []
        self._unlock()

    def _lock(self) -> None:
        """One export of this config's store at a time (the service's and a CLI run, say)."""
        (self.root / self.key).mkdir(parents=True, exist_ok=True)
        self._lockf = open(self.root / self.key / ".lock", "a+b")  # noqa: SIM115 - closed in _unlock
        fcntl.flock(self._lockf.fileno(), fcntl.LOCK_EX)

    def _unlock(self) -> None:
        lockf, self._lockf = self._lockf, None
        if lockf is not None:
            lockf.close()  # releases the flock
