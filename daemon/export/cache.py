"""Export cache: skip an export when nothing it depends on changed (DESIGN section 4).

One JSON file (``data/training/.export_cache.json``), written atomically (temp
file + fsync + rename + fsync of the directory) under an ``flock`` so exports of
different configs never lose each other's entries. A torn or unreadable file
means "export again", never a crash.

An entry (per config and output path) holds:

* every export parameter (sample_every, max_games, encoder name and version,
  history length, game filters, file format); any difference is a miss;
* per source database, from the :class:`~daemon.data.gamedb.SourceSnapshot` taken
  **before** the export (and exactly what was exported): identity ``(dev,
  ino)``, the config's watermark, usable-game count and content signature. No
  mtime: a WAL checkpoint moves the mtime without changing a row. New games move
  the watermark; a status update (``active`` -> ``completed``) changes the
  usable count; a replaced file changes the identity or the signature;
* the output's size, ``mtime_ns``, inode and sha256: a missing or modified
  output is a miss (size/mtime/inode always; the sha256 too with
  ``verify_hash=True``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import structlog

from daemon.data.gamedb import SourceSnapshot
from daemon.export.tiers import take_snapshots
from daemon.keys import make_config_key
from daemon.npz.writer import fsync_dir, sha256_file

log = structlog.get_logger(__name__)
CACHE_FORMAT = 1
_SOURCE_FIELDS = ("identity", "watermark", "usable", "signature")


@dataclass(frozen=True)
class CacheDecision:
    """Truthy when an export is needed; unpacks as ``(needed, reason)``."""

    needed: bool
    reason: str
    entry: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return self.needed

    def __iter__(self) -> Iterator[Any]:
        return iter((self.needed, self.reason))


def source_record(snap: SourceSnapshot, config_key: str) -> dict[str, Any]:
    """What the cache keeps of one source for one config (JSON-able)."""
    cs = snap.configs.get(config_key)
    return {
        "identity": list(snap.identity) if snap.identity else None,
        "schema_version": snap.schema_version,
        "max_rowid": snap.max_rowid,
        "status_updates": snap.status_updates,
        "watermark": cs.watermark if cs else 0,
        "usable": cs.usable_games if cs else 0,
        "signature": cs.signature if cs else "",
    }


def norm_path(path: Path | str) -> str:
    """The one spelling of a path in the cache: absolute and normalised, so a script's relative
    ``data/games/selfplay.db`` and the service's absolute path name the same source and entry."""
    return os.path.abspath(path)


def sources_record(snapshots: Mapping[str, SourceSnapshot], config_key: str) -> dict[str, dict[str, Any]]:
    return {norm_path(path): source_record(snap, config_key) for path, snap in sorted(snapshots.items())}


def _diff_params(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    changed = [
        f"{k} {old.get(k)!r} -> {new.get(k)!r}"
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    ]
    return ", ".join(changed)


def _diff_sources(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    old = {norm_path(p): v for p, v in old.items()}  # entries written before paths were normalised
    for path in sorted(set(old) | set(new)):
        if path not in old:
            return f"new source {path}"
        if path not in new:
            return f"source removed: {path}"
        o, n = old[path], new[path]
        if o.get("identity") != n.get("identity"):
            return f"source replaced: {path} (file identity {o.get('identity')} -> {n.get('identity')})"
        if all(o.get(k) == n.get(k) for k in _SOURCE_FIELDS):
            continue
        if o.get("watermark") == n.get("watermark") and o.get("usable") != n.get("usable"):
            return (
                f"status update in {path}: usable games {o.get('usable')} -> {n.get('usable')} (no new rows)"
            )
        if o.get("watermark") == n.get("watermark") and o.get("usable") == n.get("usable"):
            return f"source content replaced: {path} (signature changed)"
        return (
            f"source changed: {path}: usable games {o.get('usable')} -> {n.get('usable')}, "
            f"watermark {o.get('watermark')} -> {n.get('watermark')}"
        )
    return None


def output_record(path: Path, sha256: str | None = None) -> dict[str, Any]:
    st = path.stat()
    return {
        "path": norm_path(path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
        "sha256": sha256 or sha256_file(path),
    }


class ExportCache:
    """``needs_export`` / ``record_export``; thread-safe, and process-safe through ``flock``."""

    def __init__(self, path: Path = Path("data/training/.export_cache.json")) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @staticmethod
    def key(config_key: str, output_path: Path) -> str:
        return f"{config_key}|{norm_path(output_path)}"

    # -- reading ---------------------------------------------------------------
    def load(self) -> tuple[dict[str, Any], str | None]:
        """(entries, problem): a missing file is empty; a torn/unreadable one is empty with a reason."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}, None
        except OSError as e:
            return {}, f"cache file {self.path} unreadable ({e.strerror})"
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return {}, f"cache file {self.path} is torn or not JSON ({e})"
        if (
            not isinstance(data, dict)
            or data.get("format") != CACHE_FORMAT
            or not isinstance(data.get("entries"), dict)
        ):
            return {}, f"cache file {self.path} has an unknown layout"
        return data["entries"], None

    def entry(self, config_key: str, output_path: Path) -> dict[str, Any] | None:
        entries, _ = self.load()
        e = entries.get(self.key(config_key, output_path))
        return e if isinstance(e, dict) else None

    def needs_export(
        self,
        db_paths: Sequence[Path],
        output_path: Path,
        board_type: str,
        num_players: int,
        force: bool = False,
        *,
        params: Mapping[str, Any] | None = None,
        snapshots: Mapping[str, SourceSnapshot] | None = None,
        verify_hash: bool = False,
    ) -> CacheDecision:
        """Whether ``output_path`` must be (re)exported, and why (one sentence)."""
        config_key = make_config_key(board_type, num_players)
        if force:
            return CacheDecision(True, "forced (force=True)")
        entries, problem = self.load()
        if problem:
            return CacheDecision(True, f"{problem}: export again")
        entry = entries.get(self.key(config_key, output_path))
        if not isinstance(entry, dict):
            return CacheDecision(True, "no cache entry (never exported to this output)")
        try:
            return self._compare(
                entry, db_paths, Path(output_path), config_key, params, snapshots, verify_hash
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            return CacheDecision(True, f"cache entry unreadable ({e!r}): export again")

    def _compare(
        self,
        entry: dict[str, Any],
        db_paths: Sequence[Path],
        output: Path,
        config_key: str,
        params: Mapping[str, Any] | None,
        snapshots: Mapping[str, SourceSnapshot] | None,
        verify_hash: bool,
    ) -> CacheDecision:
        old_params = entry["params"]
        if params is not None and dict(params) != old_params:
            return CacheDecision(True, f"export parameters changed: {_diff_params(old_params, params)}")
        snaps = snapshots if snapshots is not None else take_snapshots(db_paths)
        why = _diff_sources(entry["sources"], sources_record(snaps, config_key))
        if why:
            return CacheDecision(True, why)
        out = entry["output"]
        try:
            st = output.stat()
        except FileNotFoundError:
            return CacheDecision(True, f"output missing: {output}")
        if (st.st_size, st.st_mtime_ns, st.st_ino) != (out["size"], out["mtime_ns"], out["inode"]):
            return CacheDecision(True, f"output modified: {output} (size/mtime/inode differ from the export)")
        if verify_hash and sha256_file(output) != out["sha256"]:
            return CacheDecision(True, f"output modified: {output} (sha256 differs from the export)")
        return CacheDecision(
            False, f"cache hit: sources and parameters unchanged since {entry.get('recorded_at')}", entry
        )

    # -- writing ---------------------------------------------------------------
    def record_export(
        self,
        db_paths: Sequence[Path],
        output_path: Path,
        board_type: str,
        num_players: int,
        samples_exported: int,
        *,
        params: Mapping[str, Any],
        snapshots: Mapping[str, SourceSnapshot],
        games: int = 0,
        skipped: Mapping[str, int] | None = None,
        sha256: str | None = None,
        now: datetime | None = None,
        fingerprints: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record a finished export of exactly ``snapshots`` (taken before it started).

        ``fingerprints``: the sources' commit fingerprints taken before those snapshots
        (:mod:`daemon.export.quick`); None records none (the quick check then always misses).
        """
        config_key = make_config_key(board_type, num_players)
        output = Path(output_path)
        entry = {
            "config": config_key,
            "params": dict(params),
            "sources": sources_record(snapshots, config_key),
            "db_paths": [norm_path(p) for p in db_paths],
            "output": output_record(output, sha256),
            "samples": samples_exported,
            "games": games,
            "skipped": dict(skipped or {}),
            "recorded_at": (now or datetime.now(UTC)).isoformat(),
            "fingerprints": dict(fingerprints) if fingerprints is not None else None,
        }
        with self._locked():
            entries, problem = self.load()
            if problem:
                log.warning("export.cache_reset", path=str(self.path), reason=problem)
            entries[self.key(config_key, output)] = entry
            self._write({"format": CACHE_FORMAT, "entries": entries})
        return entry

    def note_fingerprints(
        self, config_key: str, output_path: Path, seen: Mapping[str, Any], fingerprints: Mapping[str, Any]
    ) -> None:
        """After a full-check hit on entry ``seen``: keep ``fingerprints`` (taken before that check).

        Only while the entry is still ``seen`` (another export may have recorded a newer one).
        """
        with self._locked():
            entries, _ = self.load()
            entry = entries.get(self.key(config_key, output_path))
            if not isinstance(entry, dict) or any(entry.get(k) != seen.get(k) for k in ("sources", "output")):
                return
            entry["fingerprints"] = dict(fingerprints)
            self._write({"format": CACHE_FORMAT, "entries": entries})

    def forget(self, config_key: str, output_path: Path) -> None:
        with self._locked():
            entries, _ = self.load()
            if entries.pop(self.key(config_key, output_path), None) is not None:
                self._write({"format": CACHE_FORMAT, "entries": entries})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a+b") as lf:
            fcntl.flock(lf.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lf.fileno(), fcntl.LOCK_UN)

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        fsync_dir(self.path.parent)
