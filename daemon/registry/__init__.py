"""The model registry: versions with full lineage, fenced writes, stages per config.

Public API: :class:`ModelRegistry` and :func:`register_trained_model`. Rows live in a
record store (:mod:`daemon.registry.backend`), model files in an object store
(:mod:`daemon.registry.store`); each is picked from a table by its URL.
"""

from daemon.registry.backend import StoreOptions
from daemon.registry.records import (
    STAGES,
    STATUSES,
    FencingTokenRejected,
    FleetRun,
    GcReport,
    LineageError,
    ModelCorrupt,
    ModelNotFound,
    ModelRecord,
    NoModelAvailable,
    ObjectDamaged,
    Promotion,
    RegistryError,
    StageEvent,
    VerifyProblem,
)
from daemon.registry.registry import DEFAULT_REGISTRY_DIR, ModelRegistry, register_trained_model

__all__ = [
    "DEFAULT_REGISTRY_DIR",
    "STAGES",
    "STATUSES",
    "FencingTokenRejected",
    "FleetRun",
    "GcReport",
    "LineageError",
    "ModelCorrupt",
    "ModelNotFound",
    "ModelRecord",
    "ModelRegistry",
    "NoModelAvailable",
    "ObjectDamaged",
    "Promotion",
    "RegistryError",
    "StageEvent",
    "StoreOptions",
    "VerifyProblem",
    "register_trained_model",
]
