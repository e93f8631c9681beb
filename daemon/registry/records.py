"""Registry value types, errors and torch-free helpers (JSON encoding, digests, checkpoint metadata)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import math
import pickle
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path, PurePath
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# candidate -> production | rejected; production -> archived (superseded). A rejected model never
# warm-starts a run and is never served.
STAGES: tuple[str, ...] = ("candidate", "production", "archived", "rejected")
STATUSES: tuple[str, ...] = ("ready", "corrupt")
# Why an object is unusable (verify(), fetch()).
OBJECT_PROBLEMS: tuple[str, ...] = ("missing", "size_mismatch", "digest_mismatch")
_MAX_PICKLE_BYTES = 16 << 20


class RegistryError(Exception):
    """Any refused registry operation (bad input, lineage, fencing, integrity)."""


class ModelNotFound(RegistryError):
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        super().__init__(f"model {model_id!r} not found")


class FencingTokenRejected(RegistryError):
    """The writer's token is older than one already accepted for the config: its lock was lost."""

    def __init__(self, config_key: str, token: int, highest: int) -> None:
        self.config_key, self.token, self.highest = config_key, token, highest
        why = (
            "the lock service could not confirm it"  # highest -1: Redis did not answer in time
            if highest < 0
            else f"token {highest} was already accepted"
        )
        super().__init__(
            f"fencing token {token} rejected for {config_key}: {why} "
            "(the writer's lock was lost; nothing was written)"
        )


class LineageError(RegistryError):
    """Unknown parent, self-parent, or a parent chain that forms a cycle."""


class ModelCorrupt(RegistryError):
    def __init__(self, model_id: str, reason: str) -> None:
        self.model_id, self.reason = model_id, reason
        super().__init__(f"model {model_id}: {reason}")


class NoModelAvailable(RegistryError):
    """No usable model of ``config`` in ``stage`` (``pull`` with nothing to serve)."""

    def __init__(self, config_key: str, stage: str) -> None:
        self.config_key, self.stage = config_key, stage
        super().__init__(f"no usable {stage} model for {config_key}")


class ObjectDamaged(RegistryError):
    """A stored object is missing or does not hash to its name (``problem`` in OBJECT_PROBLEMS)."""

    def __init__(self, location: str, problem: str) -> None:
        self.location, self.problem = location, problem
        super().__init__(f"object {location}: {problem}")


@dataclass(frozen=True)
class ModelRecord:
    model_id: str
    config_key: str
    version: int
    board_type: str
    num_players: int
    created_at: datetime  # UTC, timezone-aware
    stage: str  # one of STAGES
    status: str  # ready | corrupt (verify() or fetch() found the object missing or altered)
    path: str  # absolute path of the content-addressed file
    sha256: str
    size: int
    data_hash: str | None
    data_path: str | None
    source_snapshot: Any
    source_data_paths: list[str]
    training_config: dict[str, Any]
    metrics: dict[str, Any]
    checkpoint_metadata: dict[str, Any] | None
    parent_model_id: str | None
    parent_version: int | None
    run_id: str | None
    fencing_token: int | None
    # True when parent_model_id names a model outside this registry (e.g. an upstream
    # ``model_v3_20241210``): recorded as given, without version or cycle checks.
    parent_external: bool = False

    @property
    def parent(self) -> str | None:
        return self.parent_model_id

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


@dataclass(frozen=True)
class StageEvent:
    id: int
    model_id: str
    config_key: str
    event: str  # registered | stage | status
    from_stage: str | None
    to_stage: str | None
    reason: str
    at: datetime
    fencing_token: int | None

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["at"] = self.at.isoformat()
        return d


@dataclass(frozen=True)
class FleetRun:
    """One training run as the fleet sees it (the registry's ``runs`` table)."""

    run_id: str
    config_key: str
    node: str
    state: str  # one of daemon.runs.journal.STATES
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    usable_games: int | None
    model_id: str | None
    message: str | None
    fencing_token: int | None

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("started_at", "updated_at", "finished_at"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


@dataclass(frozen=True)
class Promotion:
    model_id: str
    config_key: str
    previous: str | None  # the production model that was archived, if any
    changed: bool  # False when the model already was production


@dataclass
class GcReport:
    temp_removed: list[str] = field(default_factory=list)
    orphans_removed: list[str] = field(default_factory=list)
    orphans_kept: list[str] = field(default_factory=list)  # younger than the grace period


@dataclass
class VerifyProblem:
    model_id: str
    problem: str  # one of OBJECT_PROBLEMS


def _plain(obj: Any) -> Any:
    """Make ``obj`` strict-JSON friendly: non-finite floats become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    for name in ("as_dict", "to_dict"):
        fn = getattr(obj, name, None)
        if callable(fn):
            return _plain(fn())
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return _plain(obj.tolist())
    raise TypeError(f"cannot record a value of type {type(obj).__name__} in the registry")


def to_json(obj: Any) -> str:
    """Strict JSON (sorted keys); raises :class:`RegistryError` naming the bad value type."""
    try:
        return json.dumps(_plain(obj), default=_default, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"cannot encode registry field: {e}") from None


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def file_sha256(path: Path) -> str:
    """sha256 over the whole file, streamed."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class _Opaque:
    """Stand-in for any torch object (tensors, storages, dtypes) met while reading metadata."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _MetadataUnpickler(pickle.Unpickler):
    # Only OrderedDict is rebuilt for real; torch.* names become inert stubs and are never
    # imported; anything else is refused. So no code runs and torch is not loaded.
    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" or module.startswith("torch."):
            return _Opaque
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        return None  # tensor storages live in separate zip members; not needed for metadata


def read_checkpoint_metadata(path: Path) -> dict[str, Any] | None:
    """The ``metadata`` dict of a trainer checkpoint (``torch.save`` zip format), read without torch.

    Returns None for anything that is not such a checkpoint (e.g. random bytes)."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as zf:
            names = [i for i in zf.infolist() if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
            if len(names) != 1 or names[0].file_size > _MAX_PICKLE_BYTES:
                return None
            with zf.open(names[0]) as f:
                obj = _MetadataUnpickler(f).load()
    except Exception as e:  # any malformed file simply has no readable metadata
        log.debug("registry.checkpoint_unreadable", path=str(path), error=str(e))
        return None
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return None
    decoded = json.loads(json.dumps(_plain(meta), default=lambda o: None, allow_nan=False))
    return decoded if isinstance(decoded, dict) else None


def utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def check_token(token: int | None) -> None:
    if token is not None and (isinstance(token, bool) or not isinstance(token, int) or token < 0):
        raise RegistryError(f"fencing_token must be a non-negative int or None, got {token!r}")
