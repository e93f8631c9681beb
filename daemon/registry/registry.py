"""Model registry: rows in a record store + content-addressed objects, fenced writes, lineage, stages.

Rows live in a record store (:mod:`daemon.registry.backend`: SQLite ``registry.db`` under
``registry_dir`` by default, PostgreSQL for a fleet) and model files in an object store
(:mod:`daemon.registry.store`: ``objects/sha256/<hex>.pt`` by default, a shared mount, or S3;
immutable, the same bytes registered twice stored once).

Publication order: the file is staged (copied to a temp name and fsynced, or uploaded to S3),
then - inside the config's write transaction, after the fencing check - published under its
digest, and only then is the row committed. A crash before publication leaves a temp file
(swept once older than the temp grace); a crash after it leaves an object no row names
(collected by ``collect_garbage`` after its grace). GC runs under a lock that excludes every
writer, so it never removes an object between its publication and its row's commit.

Fencing (DESIGN 4 and 11): each config stores the highest accepted token, in the registry of
record. A write whose token is lower is rejected with :class:`FencingTokenRejected` and writes
nothing; an equal token is accepted (one holder registers, then promotes).
``fencing_token=None`` skips the check: that is for manual operator/CLI actions only
(``require_token=True`` forbids it, e.g. in the service).

Lineage: a parent this registry knows is checked (its version recorded, no cycle); a parent id
it does not know, such as an upstream ``model_v3_20241210``, is recorded as an external parent.
An id of this registry's own form (``square8_2p-v9``) that names no row is refused as a mistake.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from daemon.keys import make_config_key, validate_config_key
from daemon.registry.backend import (
    RecordStore,
    RecordTxn,
    StoreOptions,
    default_url,
    open_record_store,
    redact_url,
)
from daemon.registry.fleet_runs import RegistryRuns
from daemon.registry.maintenance import RegistryMaintenance
from daemon.registry.records import (
    LineageError,
    RegistryError,
    check_token,
    file_sha256,
    read_checkpoint_metadata,
    to_json,
    utc,
)
from daemon.registry.stages import RegistryStages
from daemon.registry.store import DEFAULT_TEMP_GRACE, ObjectStore, open_object_store

if TYPE_CHECKING:
    from daemon.settings import Settings

log = structlog.get_logger(__name__)

OBJECTS_DIR = Path("objects")
# Scripts only; the service passes settings.registry_dir.
DEFAULT_REGISTRY_DIR = Path("data") / "model_registry"
# This registry's own model ids: CONFIG-vN.
_OWN_ID = re.compile(r"^([a-z0-9]+_[0-9]p)-v([0-9]+)$")


class ModelRegistry(RegistryStages, RegistryMaintenance, RegistryRuns):
    """Registry over ``registry_dir``. The constructor only stores; ``open()``/``close()`` (or
    ``with``) do I/O. Methods called before ``open()`` connect on first use (for scripts); the
    object is thread-safe (the record store serialises or pools its connections).

    ``url`` picks the record store (default ``sqlite:///<registry_dir>/registry.db``), ``store``
    the object store (default ``<registry_dir>/objects``; a path or ``s3://bucket/prefix``),
    ``options`` the connection settings (password, pool, timeouts)."""

    def __init__(
        self,
        registry_dir: Path | str,
        *,
        url: str | None = None,
        store: str | None = None,
        options: StoreOptions | None = None,
        gc_grace_seconds: float = 3600.0,
        temp_grace_seconds: float = DEFAULT_TEMP_GRACE,
        require_token: bool = False,
        read_only: bool = False,
        hook: Callable[[str], None] | None = None,
    ) -> None:
        self.registry_dir = Path(registry_dir)
        self.url = url or default_url(self.registry_dir)
        self.gc_grace_seconds = gc_grace_seconds
        self.temp_grace_seconds = temp_grace_seconds
        self.require_token = require_token
        # Fault-injection point for tests: called with "copied" (object staged) and
        # "published" (object visible under its digest, row not yet committed).
        self._hook = hook
        # read_only (status, list, show): reads a copy of the rows; creates and sweeps nothing.
        self.read_only = read_only
        options = options or StoreOptions()
        if read_only:
            options = dataclasses.replace(options, read_only=True)
        self._records: RecordStore = open_record_store(self.url, options)
        self.store: ObjectStore = open_object_store(store or str(self.root / OBJECTS_DIR))

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        require_token: bool = False,
        read_only: bool = False,
        hook: Callable[[str], None] | None = None,
    ) -> ModelRegistry:
        """The registry the settings describe (``registry.*``, DESIGN 11)."""
        r = settings.registry
        options = StoreOptions(
            password=r.resolved_password(),
            pool_size=r.pool_size,
            connect_timeout=r.connect_timeout,
            statement_timeout=r.statement_timeout,
            lock_timeout=r.lock_timeout,
            idle_in_transaction_timeout=r.idle_in_transaction_timeout,
            busy_timeout=r.busy_timeout,
        )
        return cls(
            settings.registry_dir,
            # None: default_url(registry_dir), resolved ("sqlite:///data/..." would name /data)
            url=r.url,
            store=settings.registry_store,
            options=options,
            gc_grace_seconds=r.gc_grace,
            temp_grace_seconds=r.temp_grace,
            require_token=require_token,
            read_only=read_only,
            hook=hook,
        )

    # -- lifecycle ------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.registry_dir.resolve()

    @property
    def objects_dir(self) -> Path:
        """Where the default file store keeps objects (``<registry_dir>/objects/sha256``)."""
        return self.root / OBJECTS_DIR / "sha256"

    def __enter__(self) -> ModelRegistry:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect (migrating the schema), and sweep temp files left by dead writers."""
        self._records.open()
        if self.read_only:
            return
        try:
            self.store.open()
            self.sweep_temp_files()
        except BaseException:
            self._records.close()
            raise

    def close(self) -> None:
        self._records.close()

    def describe(self) -> dict[str, Any]:
        """Where this registry lives (no secrets), for ``check`` and ``/status``."""
        return {
            "url": redact_url(self.url),
            "schema_version": self._records.schema_version(),
            "store": self.store.location,
        }

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
        commit, and may raise :class:`FencingTokenRejected` (an extra, cluster-wide check).
        """
        config = make_config_key(board_type, num_players)
        board = config.rsplit("_", 1)[0]
        src = Path(model_path)
        if not src.is_file():
            raise RegistryError(f"model file {src}: missing or not a regular file")
        check_token(fencing_token)
        if fencing_token is None and self.require_token:
            raise RegistryError(f"register {config}: a fencing token is required")
        if parent_model_id is not None and not parent_model_id.strip():
            raise LineageError("parent_model_id must be a model id or None, got an empty string")
        if data_path is not None:
            computed = file_sha256(Path(data_path))
            if data_hash is not None and data_hash != computed:
                raise RegistryError(
                    f"data file {data_path}: sha256 {computed} != expected data_hash {data_hash}"
                )
            data_hash = computed
        elif data_hash is None and source_data_paths:
            data_hash = sources_digest(source_data_paths)
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
                parent_version, external = self._check_parent(txn, model_id, parent_model_id)
                published = store.publish(staged)
                self._call_hook("published")
                row = dict(
                    model_id=model_id, config_key=config, version=version, board_type=board,
                    num_players=num_players, created_at=created, stage="candidate", status="ready",
                    sha256=staged.digest, size=staged.size, data_hash=data_hash, data_path=data_file,
                    parent_model_id=parent_model_id, parent_version=parent_version,
                    parent_external=external, run_id=run_id, fencing_token=fencing_token, **payload,
                )  # fmt: skip
                txn.insert_model(row)
                txn.add_event(
                    (model_id, config, "registered", None, "candidate", "registered", created, fencing_token)
                )
        except BaseException:
            store.release(staged)
            if published or staged.created:
                self._drop_unreferenced(staged.digest)
            raise
        store.release(staged)
        log.info("registry.registered", config=config, model_id=model_id, sha256=staged.digest,
                 parent=parent_model_id, external_parent=external, token=fencing_token,
                 run_id=run_id)  # fmt: skip
        return model_id

    def _call_hook(self, point: str) -> None:
        if self._hook is not None:
            self._hook(point)

    def _drop_unreferenced(self, digest: str) -> None:
        try:
            with self._records.write(None) as txn:
                if not txn.digest_referenced(digest):
                    self.store.remove(digest)
        except RegistryError as e:  # the failure being handled matters more; GC collects it later
            log.warning("registry.drop_failed", sha256=digest, error=str(e))

    # -- lineage --------------------------------------------------------------------
    @staticmethod
    def _check_parent(txn: RecordTxn, model_id: str, parent: str | None) -> tuple[int | None, bool]:
        """``(parent_version, external)``; refuses a self-parent, a cycle, or an unknown own-form id."""
        if parent is None:
            return None, False
        if parent == model_id:
            raise LineageError(f"model {model_id} cannot be its own parent")
        row = txn.model(parent)
        if row is None:
            own = _OWN_ID.match(parent)
            if own is not None:
                try:
                    validate_config_key(own.group(1))
                except ValueError:
                    return None, True
                raise LineageError(f"unknown parent model {parent!r} (no such version in this registry)")
            return None, True
        seen = {model_id}
        cur: str | None = parent
        while cur is not None:
            if cur in seen:
                raise LineageError(f"parent {parent!r} of {model_id} leads to a lineage cycle at {cur!r}")
            seen.add(cur)
            r = txn.model(cur)
            cur = r["parent_model_id"] if r is not None and not r["parent_external"] else None
        return int(row["version"]), False


def sources_digest(paths: Sequence[Path | str]) -> str:
    """``data_hash`` when only the source files are named: sha256 over one line per listed
    file, in the order given, ``<absolute path>\t<its sha256, or "missing">\n``."""
    h = hashlib.sha256()
    for p in paths:
        path = Path(p).absolute()
        digest = file_sha256(path) if path.is_file() else "missing"
        h.update(f"{path}\t{digest}\n".encode())
    return h.hexdigest()


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
