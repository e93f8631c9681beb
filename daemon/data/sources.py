"""All configured game databases, polled together and summed per config.

A source that cannot be read is reported (``ok=False`` with the reason) and
simply contributes nothing: the other sources and configs are unaffected.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from daemon.data.gamedb import GameDB, GameDBError, SkipCounts, SourceSnapshot

log = structlog.get_logger(__name__)


@dataclass
class ConfigTotals:
    usable_games: int = 0
    new_games: int = 0
    skipped: SkipCounts = field(default_factory=SkipCounts)
    # path -> per-config signature, for the export cache.
    signatures: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PollResult:
    sources: dict[str, SourceSnapshot]
    configs: dict[str, ConfigTotals]

    def healthy(self) -> bool:
        return all(s.ok for s in self.sources.values())


def expand(patterns: Sequence[str]) -> list[Path]:
    """Paths named by ``patterns`` (globs expanded; explicit names kept even if missing)."""
    out: dict[Path, None] = {}
    for pattern in patterns:
        names = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        for name in names:
            if name.endswith(("-wal", "-shm", "-journal")):
                continue
            out.setdefault(Path(name).absolute(), None)
    return list(out)


def snapshot_readable(
    paths: Sequence[Path],
) -> tuple[dict[str, SourceSnapshot], dict[str, GameDBError]]:
    """A fresh snapshot of each readable path, and the error of each other one (DESIGN 13).

    Raises the first error when no path is readable: a broken set of sources never looks
    like a small data set.
    """
    snaps: dict[str, SourceSnapshot] = {}
    failed: dict[str, GameDBError] = {}
    for path in paths:
        db = GameDB(Path(path))
        try:
            snaps[str(db.path)] = db.refresh()
        except GameDBError as e:
            failed[str(db.path)] = e
        finally:
            db.close()
    if failed and not snaps:
        raise next(iter(failed.values()))
    return snaps, failed


class GameSources:
    """Keeps one :class:`GameDB` per file; ``poll()`` refreshes them all (blocking: run in a thread)."""

    def __init__(
        self,
        patterns: Sequence[str],
        config_keys: Sequence[str],
        *,
        busy_timeout: float = 5.0,
        on_change: Callable[[str, bool, str | None], None] | None = None,
    ) -> None:
        self.patterns = list(patterns)
        self.config_keys = list(config_keys)
        self.busy_timeout = busy_timeout
        self.on_change = on_change
        self._dbs: dict[Path, GameDB] = {}
        self._health: dict[str, bool] = {}
        self._warned: dict[str, tuple[str, ...]] = {}
        self.last: PollResult | None = None

    def paths(self) -> list[Path]:
        return list(self._dbs)

    def db(self, path: Path) -> GameDB:
        return self._dbs[path]

    def poll(self) -> PollResult:
        current = expand(self.patterns)
        for path in list(self._dbs):
            if path not in current:  # a glob match that went away
                current.append(path)
        sources: dict[str, SourceSnapshot] = {}
        for path in current:
            db = self._dbs.get(path)
            if db is None:
                db = self._dbs[path] = GameDB(path, busy_timeout=self.busy_timeout)
            snap = db.poll()
            sources[str(path)] = snap
            self._track(str(path), snap)
        self.last = PollResult(sources=sources, configs=self._totals(sources))
        return self.last

    def snapshot_readable(
        self, paths: Sequence[Path]
    ) -> tuple[dict[str, SourceSnapshot], dict[str, GameDBError]]:
        """:func:`snapshot_readable` from the warm databases the poll holds (the export's snapshot).

        A held database refreshes incrementally (its cost is the rows new since the last
        poll, and its connection keeps its page cache); a path the poll does not hold yet
        gets a one-off full scan. Raises the first error when no path is readable.
        """
        snaps: dict[str, SourceSnapshot] = {}
        failed: dict[str, GameDBError] = {}
        for path in paths:
            held = self._dbs.get(Path(path))
            db = held if held is not None else GameDB(Path(path), busy_timeout=self.busy_timeout)
            try:
                snaps[str(db.path)] = db.refresh()  # serialised with the poll by the db's lock
            except GameDBError as e:
                failed[str(db.path)] = e
            finally:
                if held is None:
                    db.close()
        if failed and not snaps:
            raise next(iter(failed.values()))
        return snaps, failed

    def _track(self, path: str, snap: SourceSnapshot) -> None:
        if snap.ok and snap.warnings != self._warned.get(path, ()):
            # Readable but worth telling (a schema newer than this reader knows): once per change.
            log.warning("source.warning", source=path, warnings=list(snap.warnings))
        self._warned[path] = snap.warnings if snap.ok else self._warned.get(path, ())
        was = self._health.get(path)
        self._health[path] = snap.ok
        if was is None and snap.ok:
            return
        if was is not False and not snap.ok:
            log.warning("source.unhealthy", source=path, reason=snap.error, kind=snap.error_kind)
        elif was is False and snap.ok:
            log.info("source.recovered", source=path)
        else:
            return
        if self.on_change is not None:
            self.on_change(path, snap.ok, snap.error)

    def _totals(self, sources: dict[str, SourceSnapshot]) -> dict[str, ConfigTotals]:
        totals = {k: ConfigTotals() for k in self.config_keys}
        for path, snap in sources.items():
            for key, cs in snap.configs.items():
                t = totals.get(key)
                if t is None:
                    continue
                t.usable_games += cs.usable_games
                t.new_games += cs.new_games
                for name, n in cs.skipped.as_dict().items():
                    setattr(t.skipped, name, getattr(t.skipped, name) + n)
                t.signatures[path] = cs.signature
        return totals

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()
