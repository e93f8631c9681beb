"""Model registry: SQLite rows + content-addressed model files, fenced writes, lineage, stages.

Rows live in a record store (:mod:`daemon.registry.backend`; default ``registry.db`` under
``registry_dir``, SQLite on local disk) and model files in an object store
(:mod:`daemon.registry.store`; default ``objects/sha256/<hex>.pt``, immutable, the same bytes
registered twice stored once).

Publication order: the file is copied to ``objects/sha256/.tmp-*`` (flock held while written),
fsynced, then - inside the config's write transaction, after the fencing check - renamed to its digest name
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

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from daemon.keys import make_config_key, validate_config_key
from daemon.registry.backend import RecordStore, RecordTxn, Row, default_url, open_record_store
from daemon.registry.records import (
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
    check_token,
    file_sha256,
    from_json,
    read_checkpoint_metadata,
    to_json,
    utc,
)
from daemon.registry.store import ObjectStore, open_object_store

log = structlog.get_logger(__name__)

OBJECTS_SUBDIR = Path("objects") / "sha256"
# Scripts only; the service passes settings.registry_dir.
DEFAULT_REGISTRY_DIR = Path("data") / "model_registry"
_JSON_COLUMNS = ("source_snapshot", "source_data_paths", "training_config", "metrics", "checkpoint_metadata")


class ModelRegistry:
    """Registry over ``registry_dir``. The constructor only stores; ``open()``/``close()`` (or
    ``with``) do I/O. Methods called before ``open()`` connect on first use (for scripts); the
    object is thread-safe (the record store serialises its connection)."""

    def __init__(
        self,
        registry_dir: Path | str,
        *,
        url: str | None = None,
        store: str | None = None,
        busy_timeout: float = 30.0,
        gc_grace_seconds: float = 3600.0,
        require_token: bool = False,
        read_only: bool = False,
        hook: Callable[[str], None] | None = None,
    ) -> None:
        self.registry_dir = Path(registry_dir)
        self.url = url or default_url(self.registry_dir)
        self.gc_grace_seconds = gc_grace_seconds
        self.require_token = require_token
        # Fault-injection point for tests: called with "copied" (temp file fsynced) and
        # "published" (object renamed, row not yet committed).
        self._hook = hook
        # read_only (status, list, show): reads a copy of the rows; creates and sweeps nothing.
        self.read_only = read_only
        self._records: RecordStore = open_record_store(
            self.url, busy_timeout=busy_timeout, read_only=read_only
        )
        self.store: ObjectStore = open_object_store(store or str(self.objects_dir))

    # -- lifecycle ------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.registry_dir.resolve()

    @property
    def objects_dir(self) -> Path:
        return self.root / OBJECTS_SUBDIR

    def __enter__(self) -> ModelRegistry:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect, create the schema, and sweep temp files left by dead writers."""
        self._records.open()
        if not self.read_only:
            self.store.open()
            self.sweep_temp_files()

    def close(self) -> None:
        self._records.close()

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
        self._raise_if_stale(config, fencing_token, self._records.last_token(config))  # early exit
        store = self.store
        staged = store.stage(src)
        published = False
        try:
            self._call_hook("copied")
            with self._records.write(config) as txn:
                self._accept_token(txn, config, fencing_token)
                if fence_check is not None:
                    fence_check(config, fencing_token)
                version = txn.next_version(config)
                model_id = f"{config}-v{version}"
                parent_version = self._check_parent(txn, model_id, parent_model_id)
                published = store.publish(staged)
                self._call_hook("published")
                row = dict(
                    model_id=model_id, config_key=config, version=version, board_type=board,
                    num_players=num_players, created_at=created, stage="candidate", status="ready",
                    sha256=staged.digest, size=staged.size, data_hash=data_hash, data_path=data_file,
                    parent_model_id=parent_model_id, parent_version=parent_version, run_id=run_id,
                    fencing_token=fencing_token, **payload,
                )  # fmt: skip
                txn.insert_model(row)
                txn.add_event(
                    (model_id, config, "registered", None, "candidate", "registered", created, fencing_token)
                )
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
        with self._records.write(None) as txn:
            if not txn.digest_referenced(digest):
                self.store.remove(digest)

    # -- fencing --------------------------------------------------------------------
    def highest_token(self, config: str) -> int:
        """Highest fencing token accepted for ``config`` (0 if none): the lock counter's floor."""
        return self._records.last_token(validate_config_key(config))

    def highest_token_overall(self) -> int:
        return self._records.last_token_overall()

    @staticmethod
    def _raise_if_stale(config: str, token: int | None, highest: int | None) -> None:
        if token is not None and highest is not None and token < highest:
            log.warning("registry.rejected", config=config, token=token, highest=highest)
            raise FencingTokenRejected(config, token, highest)

    def _accept_token(self, txn: RecordTxn, config: str, token: int | None) -> None:
        """Conditional raise of the config's token inside the write transaction (anchors 1.4)."""
        if token is None:
            return
        if not txn.raise_token(config, token):
            self._raise_if_stale(config, token, txn.last_token(config))
            raise RegistryError(f"fencing update for {config} failed")  # unreachable in practice

    # -- lineage --------------------------------------------------------------------
    def _check_parent(self, txn: RecordTxn, model_id: str, parent: str | None) -> int | None:
        if parent is None:
            return None
        if parent == model_id:
            raise LineageError(f"model {model_id} cannot be its own parent")
        row = txn.model(parent)
        if row is None:
            raise LineageError(f"unknown parent model {parent!r}")
        seen = {model_id}
        cur: str | None = parent
        while cur is not None:
            if cur in seen:
                raise LineageError(f"parent {parent!r} of {model_id} leads to a lineage cycle at {cur!r}")
            seen.add(cur)
            r = txn.model(cur)
            cur = r["parent_model_id"] if r is not None else None
        return int(row["version"])

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
    def _record(self, r: Row) -> ModelRecord:
        d = dict(r)
        for col in _JSON_COLUMNS:
            d[col] = from_json(d[col])
        d["created_at"] = datetime.fromisoformat(d["created_at"])
        return ModelRecord(path=self.store.locate(d["sha256"]), **d)

    def get_model(self, model_id: str) -> ModelRecord | None:
        rows = self._records.models(model_id=model_id)
        return self._record(rows[0]) if rows else None

    def require_model(self, model_id: str) -> ModelRecord:
        rec = self.get_model(model_id)
        if rec is None:
            raise ModelNotFound(model_id)
        return rec

    def list_models(self, config: str | None = None, stage: str | None = None) -> list[ModelRecord]:
        if config is not None:
            validate_config_key(config)
        if stage is not None and stage not in STAGES:
            raise RegistryError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
        return [self._record(r) for r in self._records.models(config=config, stage=stage)]

    def get_production(self, config: str) -> ModelRecord | None:
        rows = self._records.models(config=validate_config_key(config), stage="production")
        return self._record(rows[0]) if rows else None

    def get_latest(self, config: str) -> ModelRecord | None:
        """Newest usable (status ``ready``) version of ``config``."""
        rows = self._records.models(config=validate_config_key(config), status="ready", newest_only=True)
        return self._record(rows[0]) if rows else None

    def get_history(self, model_id: str | None = None, config: str | None = None) -> list[StageEvent]:
        if model_id is None and config is not None:
            validate_config_key(config)
        rows = self._records.events(model_id=model_id, config=config)
        return [StageEvent(**{**r, "at": datetime.fromisoformat(r["at"])}) for r in rows]

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
        with self._records.write(config) as txn:
            if fencing_token is None and self.require_token:
                raise RegistryError(f"promote {model_id}: a fencing token is required")
            self._accept_token(txn, config, fencing_token)
            row = txn.model(model_id)
            assert row is not None
            if row["status"] != "ready":
                raise ModelCorrupt(model_id, f"status is {row['status']}")
            previous = txn.production_id(config)
            if previous == model_id:
                return Promotion(model_id, config, None, changed=False)
            if previous is not None:
                txn.set_stage(previous, "archived")
                why = f"superseded by {model_id}"
                txn.add_event((previous, config, "stage", "production", "archived", why, at, fencing_token))
            txn.set_stage(model_id, "production")
            txn.add_event((model_id, config, "stage", row["stage"], "production", reason, at, fencing_token))
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
        with self._records.write(rec.config_key) as txn:
            self._accept_token(txn, rec.config_key, fencing_token)
            row = txn.model(model_id)
            assert row is not None
            if row["stage"] != "archived":
                txn.set_stage(model_id, "archived")
                at = utc(now).isoformat()
                txn.add_event(
                    (model_id, rec.config_key, "stage", row["stage"], "archived", reason, at, fencing_token)
                )

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
                with self._records.write(rec.config_key) as txn:
                    txn.set_status(rec.model_id, new_status)
                    why = f"verify: {problem or 'ok'}"
                    txn.add_event(
                        (rec.model_id, rec.config_key, "status", rec.stage, rec.stage, why, at, None)
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
        """Sweep dead temp files and delete objects no row names, once older than the grace."""
        report = GcReport(temp_removed=self.sweep_temp_files())
        cutoff = utc(now).timestamp() - (self.gc_grace_seconds if grace_seconds is None else grace_seconds)
        # With every writer excluded no registration is between publish and commit, so "no row" is final.
        with self._records.write(None) as txn:
            known = txn.digests()
            for digest, mtime in self.store.objects():
                if digest in known:
                    continue
                where = self.store.locate(digest)
                if mtime <= cutoff:
                    self.store.remove(digest)
                    report.orphans_removed.append(where)
                else:
                    report.orphans_kept.append(where)
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
