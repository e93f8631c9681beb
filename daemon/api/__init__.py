"""The design document's names for scripts (DESIGN 10): synchronous, with defaults from the
settings a command would use (``RINGRIFT_DAEMON_CONFIG``, else ``./config.yaml``, else the
built-in defaults; ``REDIS_URL`` as upstream's). The README's "The design document's API"
maps each document import to its name here; ``tests/seed`` runs the document's examples.

The package itself never uses these conveniences: the service builds its objects in
:mod:`daemon.service.app` from the one ``Settings`` it was given.
"""

from daemon.api.components import (
    DistributedLock,
    ExportCache,
    TrainingTriggers,
    get_curriculum_feedback,
    get_training_health_monitor,
    register_trained_model,
)
from daemon.api.pipeline import PipelineStatus, ScriptPipeline, get_optimized_pipeline
from daemon.api.settings import script_settings
from daemon.decide.curriculum import ConfigMetrics, CurriculumFeedback
from daemon.decide.health import TrainingHealthMonitor
from daemon.decide.triggers import TriggerConfig, TriggerDecision
from daemon.export.tiers import ExportSettings, get_export_settings
from daemon.npz.dense import load_dense
from daemon.pipeline import OptimizedTrainingPipeline, PipelineResult
from daemon.registry.registry import ModelRegistry

__all__ = [
    "ConfigMetrics",
    "CurriculumFeedback",
    "DistributedLock",
    "ExportCache",
    "ExportSettings",
    "ModelRegistry",
    "OptimizedTrainingPipeline",
    "PipelineResult",
    "PipelineStatus",
    "ScriptPipeline",
    "TrainingHealthMonitor",
    "TrainingTriggers",
    "TriggerConfig",
    "TriggerDecision",
    "get_curriculum_feedback",
    "get_export_settings",
    "get_optimized_pipeline",
    "get_training_health_monitor",
    "load_dense",
    "register_trained_model",
    "script_settings",
]
