"""Model registry: SQLite rows + content-addressed model files, fenced writes, lineage, stages.

Layout under ``registry_dir``: ``registry.db`` (SQLite, WAL; local disk only) and
``objects/sha256/<hex>.pt`` (immutable; the same bytes registered twice are stored once).

Publication order: the file is copied to ``objects/sha256/.tmp-*`` (flock held while written),
fsynced, then - inside ``BEGIN IMMEDIATE``, after the fencing check - renamed to its digest name
and the directory fsynced, and only then is the row committed. A crash before the rename leaves
an unlocked temp file (swept by ``open()``); a crash after it leaves an object no row names
(collected by ``collect_garbage``). GC runs under the same write lock as publication, so it never
sees an in-flight object.

Fencing (DESIGN 4, anchors 1.4): each config stores the highest accepted token. A write whose token
is lower is rejected with :class:`FencingTokenRejected` and writes nothing; an equal token is
accepted (one holder registers, then promotes). ``fencing_token=None`` skips the check: that is for
manual operator/CLI actions only (``require_token=True`` forbids it, e.g. in the service).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from daemon.keys import make_config_key, validate_config_key
from daemon.registry_model import (
    STAGES,
    FencingTokenRejected,
    GcReport,
    LineageError,
    ModelCorrupt,
    ModelNotFound,
    ModelRecord,
    Promotion,
    RegistryError,
    StageEvent,
    VerifyProblem,
    file_sha256,
    from_json,
    read_checkpoint_metadata,
    to_json,
)
from daemon.registry_store import ObjectStore, check_token, connect_db, immediate, utc

__all__ = [
    "STAGES",
    "FencingTokenRejected",
    "GcReport",
    "LineageError",
    "ModelCorrupt",
    "ModelNotFound",
    "ModelRecord",
    "ModelRegistry",
    "Promotion",
    "RegistryError",
    "StageEvent",
    "register_trained_model",
]

log = structlog.get_logger(__name__)

DB_NAME = "registry.db"
OBJECTS_SUBDIR = Path("objects") / "sha256"
# Scripts only; the service passes settings.registry_dir.
DEFAULT_REGISTRY_DIR = Path("data") / "model_registry"
_JSON_COLUMNS = ("source_snapshot", "source_data_paths", "training_config", "metrics", "checkpoint_metadata")


class ModelRegistry:
    """Registry over ``registry_dir``. The constructor only stores; ``open()``/``close()`` (or
    ``with``) do I/O. Methods called before ``open()`` connect on first use (for scripts); the
    object is thread-safe (one connection behind a lock)."""

    def __init__(
        self,
        registry_dir: Path | str,
        *,
        busy_timeout: float = 30.0,
        gc_grace_seconds: float = 3600.0,
        require_token: bool = False,
        hook: Callable[[str], None] | None = None,
    ) -> None:
        self.registry_dir = Path(registry_dir)
        self.busy_timeout = busy_timeout
        self.gc_grace_seconds = gc_grace_seconds
        self.require_token = require_token
        # Fault-injection point for tests: called with "copied" (temp file fsynced) and
        # "published" (object renamed, row not yet committed).
        self._hook = hook
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    # -- lifecycle ------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.registry_dir.resolve()

    @property
    def objects_dir(self) -> Path:
        return self.root / OBJECTS_SUBDIR

    @property
    def store(self) -> ObjectStore:
        return ObjectStore(self.objects_dir)

    def __enter__(self) -> ModelRegistry:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect, create the schema, and sweep temp files left by dead writers."""
        with self._lock:
            self._db()
            self.sweep_temp_files()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                self.objects_dir.mkdir(parents=True, exist_ok=True)
                self._conn = connect_db(self.root / DB_NAME, self.busy_timeout)
            return self._conn

    # -- registration ---------------------------------------------------------------
    def register(
        self,
        model_path: Path | str,
        board_type: str,
        num_players: int,
        training_config: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        source_data_paths: Sequence[Path | str] = (),
        parent_model_id: str | None = None,
        *,
        fencing_token: int | None = None,
        run_id: str | None = None,
        source_snapshot: Any = None,
        data_path: Path | str | None = None,
        data_hash: str | None = None,
        checkpoint_metadata: Mapping[str, Any] | None = None,
        now: datetime | None = None,
        fence_check: Callable[[str, int | None], None] | None = None,
    ) -> str:
        """Store the model file and record a new ``candidate`` version; return e.g. ``square8_2p-v7``.

        ``fence_check(config, token)`` is called inside the write transaction, just before the
        commit, and may raise :class:`FencingTokenRejected`: the service passes a cluster-wide check
        (the newest token Redis issued for the lock), since each node keeps its own registry.
        """
        config = make_config_key(board_type, num_players)
        board = config.rsplit("_", 1)[0]
        src = Path(model_path)
        if not src.is_file():
            raise RegistryError(f"model file {src}: missing or not a regular file")
        check_token(fencing_token)
        if fencing_token is None and self.require_token:
            raise RegistryError(f"register {config}: a fencing token is required")
        if data_path is not None:
            computed = file_sha256(Path(data_path))
            if data_hash is not None and data_hash != computed:
                raise RegistryError(
                    f"data file {data_path}: sha256 {computed} != expected data_hash {data_hash}"
                )
            data_hash = computed
        if checkpoint_metadata is None:
            checkpoint_metadata = read_checkpoint_metadata(src)
        created = utc(now).isoformat()
        # Serialise every payload first: bad input fails before anything touches the disk.
        payload = {
            "source_snapshot": to_json(source_snapshot) if source_snapshot is not None else None,
            "source_data_paths": to_json([str(p) for p in source_data_paths]),
            "training_config": to_json(dict(training_config or {})),
            "metrics": to_json(dict(metrics or {})),
            "checkpoint_metadata": to_json(dict(checkpoint_metadata))
            if checkpoint_metadata is not None
            else None,
        }
        data_file = str(Path(data_path).resolve()) if data_path is not None else None
        conn = self._db()
        with self._lock:
            self._raise_if_stale(conn, config, fencing_token)  # cheap early exit, rechecked below
        store = self.store
        staged = store.stage(src)
        published = False
        try:
            self._call_hook("copied")
            with self._lock, immediate(conn):
                self._accept_token(conn, config, fencing_token)
                if fence_check is not None:
                    fence_check(config, fencing_token)
                version = int(
                    conn.execute(
                        "SELECT COALESCE(MAX(version), 0) + 1 FROM models WHERE config_key = ?", (config,)
                    ).fetchone()[0]
                )
                model_id = f"{config}-v{version}"
                parent_version = self._check_parent(conn, model_id, parent_model_id)
                published = store.publish(staged)
                self._call_hook("published")
                row = dict(
                    model_id=model_id, config_key=config, version=version, board_type=board,
                    num_players=num_players, created_at=created, stage="candidate", status="ready",
                    sha256=staged.digest, size=staged.size, data_hash=data_hash, data_path=data_file,
                    parent_model_id=parent_model_id, parent_version=parent_version, run_id=run_id,
                    fencing_token=fencing_token, **payload,
                )  # fmt: skip
                cols = ", ".join(row)
                conn.execute(
                    f"INSERT INTO models ({cols}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
                )
                ev = (model_id, config, "registered", None, "candidate", "registered", created, fencing_token)
                self._event(conn, ev)
        except BaseException:
            store.release(staged)
            if published:
                self._drop_unreferenced(staged.digest)
            raise
        store.release(staged)
        log.info("registry.registered", config=config, model_id=model_id, sha256=staged.digest,
                 parent=parent_model_id, token=fencing_token, run_id=run_id)  # fmt: skip
        return model_id

    def _call_hook(self, point: str) -> None:
        if self._hook is not None:
            self._hook(point)

    def _drop_unreferenced(self, digest: str) -> None:
        conn = self._db()
        with self._lock, immediate(conn):
            if conn.execute("SELECT 1 FROM models WHERE sha256 = ? LIMIT 1", (digest,)).fetchone() is None:
                self.store.remove(digest)

    # -- fencing --------------------------------------------------------------------
    def highest_token(self, config: str) -> int:
        """Highest fencing token accepted for ``config`` (0 if none): the lock counter's floor."""
        validate_config_key(config)
        with self._lock:
            row = (
                self._db().execute("SELECT last_token FROM fences WHERE config_key = ?", (config,)).fetchone()
            )
        return int(row[0]) if row else 0

    def highest_token_overall(self) -> int:
        with self._lock:
            row = self._db().execute("SELECT COALESCE(MAX(last_token), 0) FROM fences").fetchone()
        return int(row[0])

    def _raise_if_stale(self, conn: sqlite3.Connection, config: str, token: int | None) -> None:
        if token is None:
            return
        row = conn.execute("SELECT last_token FROM fences WHERE config_key = ?", (config,)).fetchone()
        if row is not None and token < int(row[0]):
            log.warning("registry.rejected", config=config, token=token, highest=int(row[0]))
            raise FencingTokenRejected(config, token, int(row[0]))

    def _accept_token(self, conn: sqlite3.Connection, config: str, token: int | None) -> None:
        """Conditional update inside the caller's BEGIN IMMEDIATE (anchors 1.4)."""
        if token is None:
            return
        cur = conn.execute(
            "INSERT INTO fences (config_key, last_token) VALUES (?, ?) ON CONFLICT (config_key) "
            "DO UPDATE SET last_token = excluded.last_token WHERE last_token <= excluded.last_token",
            (config, token),
        )
        if cur.rowcount != 1:
            self._raise_if_stale(conn, config, token)
            raise RegistryError(f"fencing update for {config} failed")  # unreachable in practice

    # -- lineage --------------------------------------------------------------------
    def _check_parent(self, conn: sqlite3.Connection, model_id: str, parent: str | None) -> int | None:
        if parent is None:
            return None
        if parent == model_id:
            raise LineageError(f"model {model_id} cannot be its own parent")
        row = conn.execute("SELECT version FROM models WHERE model_id = ?", (parent,)).fetchone()
        if row is None:
            raise LineageError(f"unknown parent model {parent!r}")
        seen = {model_id}
        cur: str | None = parent
        while cur is not None:
            if cur in seen:
                raise LineageError(f"parent {parent!r} of {model_id} leads to a lineage cycle at {cur!r}")
            seen.add(cur)
            r = conn.execute("SELECT parent_model_id FROM models WHERE model_id = ?", (cur,)).fetchone()
            cur = r[0] if r is not None else None
        return int(row[0])

    def get_lineage(self, model_id: str) -> list[ModelRecord]:
        """``model_id`` first, then its parent, grandparent ...; stops at a repeated id (cycle-safe)."""
        out: list[ModelRecord] = []
        seen: set[str] = set()
        cur: str | None = model_id
        while cur is not None and cur not in seen:
            rec = self.get_model(cur)
            if rec is None:
                if not out:
                    raise ModelNotFound(model_id)
                break
            seen.add(cur)
            out.append(rec)
            cur = rec.parent_model_id
        return out

    # -- reads ----------------------------------------------------------------------
    def _records(self, where: str = "", args: Sequence[Any] = (), tail: str = "") -> list[ModelRecord]:
        sql = f"SELECT * FROM models {where} ORDER BY config_key, version {tail}"
        with self._lock:
            rows = self._db().execute(sql, tuple(args)).fetchall()
        return [self._record(r) for r in rows]

    def _record(self, r: sqlite3.Row) -> ModelRecord:
        d: dict[str, Any] = dict(zip(r.keys(), tuple(r), strict=True))
        for col in _JSON_COLUMNS:
            d[col] = from_json(d[col])
        d["created_at"] = datetime.fromisoformat(d["created_at"])
        return ModelRecord(path=str(self.store.path_for(d["sha256"])), **d)

    def get_model(self, model_id: str) -> ModelRecord | None:
        recs = self._records("WHERE model_id = ?", (model_id,))
        return recs[0] if recs else None

    def require_model(self, model_id: str) -> ModelRecord:
        rec = self.get_model(model_id)
        if rec is None:
            raise ModelNotFound(model_id)
        return rec

    def list_models(self, config: str | None = None, stage: str | None = None) -> list[ModelRecord]:
        clauses: list[str] = []
        args: list[Any] = []
        if config is not None:
            clauses.append("config_key = ?")
            args.append(validate_config_key(config))
        if stage is not None:
            if stage not in STAGES:
                raise RegistryError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
            clauses.append("stage = ?")
            args.append(stage)
        return self._records(("WHERE " + " AND ".join(clauses)) if clauses else "", args)

    def get_production(self, config: str) -> ModelRecord | None:
        recs = self._records("WHERE config_key = ? AND stage = 'production'", (validate_config_key(config),))
        return recs[0] if recs else None

    def get_latest(self, config: str) -> ModelRecord | None:
        """Newest usable (status ``ready``) version of ``config``."""
        recs = self._records(
            "WHERE config_key = ? AND status = 'ready'", (validate_config_key(config),), "DESC LIMIT 1"
        )
        return recs[0] if recs else None

    def get_history(self, model_id: str | None = None, config: str | None = None) -> list[StageEvent]:
        sql, args = "SELECT * FROM stage_events", []
        if model_id is not None:
            sql, args = sql + " WHERE model_id = ?", [model_id]
        elif config is not None:
            sql, args = sql + " WHERE config_key = ?", [validate_config_key(config)]
        with self._lock:
            rows = self._db().execute(sql + " ORDER BY id", args).fetchall()
        return [
            StageEvent(
                **{**dict(zip(r.keys(), tuple(r), strict=True)), "at": datetime.fromisoformat(r["at"])}
            )
            for r in rows
        ]

    @staticmethod
    def _event(conn: sqlite3.Connection, ev: tuple[Any, ...]) -> None:
        """Append ``(model_id, config, event, from_stage, to_stage, reason, at, token)`` to history."""
        conn.execute(
            "INSERT INTO stage_events (model_id, config_key, event, from_stage, to_stage, reason, at, "
            "fencing_token) VALUES (?,?,?,?,?,?,?,?)",
            ev,
        )

    # -- stages ---------------------------------------------------------------------
    def promote(
        self,
        model_id: str,
        *,
        reason: str = "",
        fencing_token: int | None = None,
        now: datetime | None = None,
    ) -> Promotion:
        """Make ``model_id`` its config's production model; archive the previous one (same config only).

        The file's digest is re-checked first: a corrupt model is never promoted."""
        check_token(fencing_token)
        rec = self.require_model(model_id)
        problem = self._check_file(rec)
        if problem is not None:
            raise ModelCorrupt(model_id, f"{rec.path}: {problem}")
        at = utc(now).isoformat()
        config = rec.config_key
        conn = self._db()
        with self._lock, immediate(conn):
            if fencing_token is None and self.require_token:
                raise RegistryError(f"promote {model_id}: a fencing token is required")
            self._accept_token(conn, config, fencing_token)
            row = conn.execute("SELECT stage, status FROM models WHERE model_id = ?", (model_id,)).fetchone()
            if row["status"] != "ready":
                raise ModelCorrupt(model_id, f"status is {row['status']}")
            prev_row = conn.execute(
                "SELECT model_id FROM models WHERE config_key = ? AND stage = 'production'", (config,)
            ).fetchone()
            previous = prev_row[0] if prev_row else None
            if previous == model_id:
                return Promotion(model_id, config, None, changed=False)
            if previous is not None:
                conn.execute("UPDATE models SET stage = 'archived' WHERE model_id = ?", (previous,))
                why = f"superseded by {model_id}"
                self._event(
                    conn, (previous, config, "stage", "production", "archived", why, at, fencing_token)
                )
            conn.execute("UPDATE models SET stage = 'production' WHERE model_id = ?", (model_id,))
            ev = (model_id, config, "stage", row["stage"], "production", reason, at, fencing_token)
            self._event(conn, ev)
        log.info(
            "registry.promoted", config=config, model_id=model_id, previous=previous, token=fencing_token
        )
        return Promotion(model_id, config, previous, changed=True)

    def archive(
        self,
        model_id: str,
        *,
        reason: str = "",
        fencing_token: int | None = None,
        now: datetime | None = None,
    ) -> None:
        check_token(fencing_token)
        rec = self.require_model(model_id)
        conn = self._db()
        with self._lock, immediate(conn):
            self._accept_token(conn, rec.config_key, fencing_token)
            cur = conn.execute("SELECT stage FROM models WHERE model_id = ?", (model_id,)).fetchone()
            if cur["stage"] != "archived":
                conn.execute("UPDATE models SET stage = 'archived' WHERE model_id = ?", (model_id,))
                at = utc(now).isoformat()
                ev = (model_id, rec.config_key, "stage", cur["stage"], "archived", reason, at, fencing_token)
                self._event(conn, ev)

    # -- maintenance ----------------------------------------------------------------
    def _check_file(self, rec: ModelRecord) -> str | None:
        return self.store.check(rec.sha256, rec.size)

    def verify(
        self, *, stage: str | None = None, mark: bool = True, now: datetime | None = None
    ) -> list[VerifyProblem]:
        """fsck: re-hash every model file (or one stage's); with ``mark``, set status ``corrupt``
        on a bad file and back to ``ready`` once it is good again (each change is an event)."""
        problems: list[VerifyProblem] = []
        at = utc(now).isoformat()
        for rec in self.list_models(stage=stage):
            problem = self._check_file(rec)
            if problem is not None:
                problems.append(VerifyProblem(rec.model_id, problem))
            new_status = "ready" if problem is None else "corrupt"
            if mark and new_status != rec.status:
                conn = self._db()
                with self._lock, immediate(conn):
                    conn.execute(
                        "UPDATE models SET status = ? WHERE model_id = ?", (new_status, rec.model_id)
                    )
                    why = f"verify: {problem or 'ok'}"
                    self._event(
                        conn, (rec.model_id, rec.config_key, "status", rec.stage, rec.stage, why, at, None)
                    )
                log.warning("registry.verified", model_id=rec.model_id, problem=problem)
        return problems

    def sweep_temp_files(self) -> list[str]:
        """Remove temp files left by dead writers (safe while other processes register)."""
        removed = self.store.sweep_temp()
        if removed:
            log.info("registry.temp_swept", count=len(removed))
        return removed

    def collect_garbage(self, *, now: datetime | None = None, grace_seconds: float | None = None) -> GcReport:
        """Sweep dead temp files and delete object files no row names, once older than the grace."""
        report = GcReport(temp_removed=self.sweep_temp_files())
        cutoff = utc(now).timestamp() - (self.gc_grace_seconds if grace_seconds is None else grace_seconds)
        conn = self._db()
        # Under the write lock no registration is between publish and commit, so "no row" is final.
        with self._lock, immediate(conn):
            known = {r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM models")}
            for p in self.store.objects():
                if p.stem in known:
                    continue
                try:
                    old = p.stat().st_mtime <= cutoff
                except FileNotFoundError:
                    continue
                if old:
                    p.unlink(missing_ok=True)
                    report.orphans_removed.append(str(p))
                else:
                    report.orphans_kept.append(str(p))
        if report.orphans_removed:
            log.info("registry.gc", removed=len(report.orphans_removed), kept=len(report.orphans_kept))
        return report


def register_trained_model(
    model_path: Path | str,
    board_type: str,
    num_players: int,
    training_config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    source_data_paths: Sequence[Path | str] = (),
    parent_model_id: str | None = None,
    *,
    registry_dir: Path | str | None = None,
    registry: ModelRegistry | None = None,
    **kwargs: Any,
) -> str:
    """Seed API. Uses ``registry`` if given, else opens ``registry_dir`` (default
    ``data/model_registry`` relative to the working directory: scripts only) for this one call.
    Keywords (``fencing_token``, ``run_id``, ``source_snapshot``, ``data_path`` ...) go to
    :meth:`ModelRegistry.register`."""
    args = (model_path, board_type, num_players, training_config, metrics, source_data_paths, parent_model_id)
    if registry is not None:
        return registry.register(*args, **kwargs)
    with ModelRegistry(DEFAULT_REGISTRY_DIR if registry_dir is None else registry_dir) as reg:
        return reg.register(*args, **kwargs)
