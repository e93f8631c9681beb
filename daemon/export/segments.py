"""Incremental export: encoded rows of finished games kept as immutable segments, reused.

A finished game never changes, so its encoded rows can be kept. Each segment file holds the
rows of up to :data:`~daemon.export.workers.TASK_GAMES` usable games of one source (in the
export's order, newest first) and is keyed, through its store directory, by the source's
file identity, the config and every parameter the encoding depends on (encoder spec, name
and version, history length, sample_every, layout, format). The store's manifest records per
segment the inclusive rowid range ``[lo, hi]`` of its games and their count and rowid sum.

An export lists the usable games of the snapshot (headers only, the same rule as the
encoder's reader), keeps each segment whose range still holds exactly its games (a status
update that makes a game in an encoded range usable, or a deletion, drops that segment),
encodes only the games no kept segment covers (worker processes as the full export does),
and assembles the NPZ from the segments in rowid order, newest first: the same rows in
the same order as a full export. Only the segments of the current export stay on disk
(their bytes are those of the output); a replaced source or other parameters start a new
store and the old one is removed.

Used when every usable game is exported from one source (no ``max_games`` cut, one source
with games of the config); otherwise the full export runs.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from daemon.data.errors import DatabaseReplaced
from daemon.data.gamedb import GameDB, SourceSnapshot
from daemon.export.workers import TASK_GAMES, Done, Output, Task, encode_task, parallel_segments
from daemon.npz.format import ArraySpec
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


class SegmentExport:
    """One incremental export of one config from one source into ``writer``."""

    def __init__(
        self,
        root: Path,
        path: Path,
        snap: SourceSnapshot,
        key: str,
        params: Mapping[str, Any],
        specs: Mapping[str, ArraySpec],
    ) -> None:
        self.root, self.path, self.snap, self.key = root, path, snap, key
        self.params, self.specs = dict(params), dict(specs)
        self.store = store_dir(root, key, snap, params)
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
    ) -> list[Stored]:
        """Adopt every segment of the export into ``writer`` (encoding what is missing).

        ``output(path)``: where and under which checks a new segment is written.
        """
        self._lock()
        cs = self.snap.configs[self.key]
        db = GameDB(self.path)
        listed = db.iter_game_keys(
            self.key, upto_rowid=cs.watermark, newest_first=False, identity=self.snap.identity
        )
        rowids = [r for _, r in listed]  # ascending
        old = [] if rebuild else _load(self.store)
        kept = _kept(old, rowids)
        if len(kept) > _COMPACT_FACTOR * len(rowids) // TASK_GAMES + _COMPACT_FLOOR:
            kept = []
        covered = {
            r
            for s in kept
            for r in rowids[bisect.bisect_left(rowids, s.lo) : bisect.bisect_right(rowids, s.hi)]
        }
        todo = [r for r in reversed(rowids) if r not in covered]
        self.store.mkdir(parents=True, exist_ok=True)
        for s in kept:
            tally(s.games, s.skipped)
        made = self._encode(list(_batches(todo, kept)), cs.watermark, workers, output, tally)
        segments = sorted([*kept, *made], key=lambda s: s.hi, reverse=True)
        for s in segments:
            writer.adopt(Segment(str(self.store / s.file), s.rows, s.sizes))
        log.info(
            "export.segments",
            config=self.key,
            source=str(self.path),
            kept=len(kept),
            dropped=len(old) - len(kept),
            encoded_games=len(todo),
            segments=len(segments),
        )
        return segments

    def _encode(
        self,
        batches: list[list[int]],
        watermark: int,
        workers: int,
        output: Callable[[str], Output],
        tally: Callable[[int, dict[str, int]], None],
    ) -> list[Stored]:
        p = self.params
        tasks = [
            Task(
                str(self.path),
                self.key,
                watermark,
                tuple(b),
                str(p["encoder_spec"]),
                int(p["history_length"]),
                int(p["sample_every"]),
                self.snap.identity,
            )
            for b in batches
        ]
        names = [f"seg-{b[-1]}-{b[0]}-{secrets.token_hex(4)}.rows" for b in batches]

        def out(i: int) -> Output:
            path = self.store / names[i]
            self._new.append(path)
            return output(str(path))

        if workers > 1 and len(tasks) >= workers:
            done: Iterator[Done] = parallel_segments(iter(tasks), workers, out)
        else:
            done = (encode_task(t, out(i)) for i, t in enumerate(tasks))
        made = []
        with contextlib.closing(done):  # type: ignore[type-var]  # a failure stops the workers now
            for b, name, d in zip(batches, names, done, strict=True):
                with open(self.store / name, "rb+") as f:  # kept across exports: durable before the manifest
                    os.fsync(f.fileno())
                if d.games != len(b):  # listed from the snapshot, gone now: the file changed under it
                    raise DatabaseReplaced(
                        self.path, f"{len(b) - d.games} listed games vanished during the export (replaced?)"
                    )
                seg = d.segment
                made.append(
                    Stored(name, b[-1], b[0], len(b), sum(b), seg.rows, seg.sizes, d.games, d.skipped)
                )
                tally(d.games, d.skipped)  # progress while encoding
        return made

    def commit(self, segments: list[Stored]) -> None:
        """After the NPZ is in place: record the store, drop every other file and store of the config."""
        _save(self.store, segments)
        keep = {s.file for s in segments} | {MANIFEST}
        for f in self.store.iterdir():
            if f.name not in keep:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
        for other in (self.root / self.key).iterdir():
            if other != self.store and other.is_dir():
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
