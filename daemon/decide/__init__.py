"""Decisions: curriculum feedback, training triggers, the health monitor and promotion tests.

Pure, explainable and durable: every decision is a function of recorded state
and a passed-in ``now``; state lives in one SQLite store (``state_dir/decide.db``).
"""

from daemon.decide.curriculum import (
    ConfigMetrics,
    CurriculumConfig,
    CurriculumFeedback,
    get_curriculum_feedback,
)
from daemon.decide.exposition import HealthCollector
from daemon.decide.health import (
    Alert,
    AlertChange,
    HealthConfig,
    HealthReport,
    TrainingHealthMonitor,
    get_training_health_monitor,
)
from daemon.decide.ingest import IngestReport, SeatMapping, ingest_evaluation_games
from daemon.decide.promotion import (
    PromotionDecision,
    PromotionParams,
    PromotionState,
    decide,
    decide_all,
    is_bootstrap,
    pairwise_outcome,
    status_line,
)
from daemon.decide.store import DecideStore, StoreError
from daemon.decide.triggers import ConfigState, TrainingTriggers, TriggerConfig, TriggerDecision

__all__ = [
    "Alert",
    "AlertChange",
    "ConfigMetrics",
    "ConfigState",
    "CurriculumConfig",
    "CurriculumFeedback",
    "DecideStore",
    "HealthCollector",
    "HealthConfig",
    "HealthReport",
    "IngestReport",
    "PromotionDecision",
    "PromotionParams",
    "PromotionState",
    "SeatMapping",
    "StoreError",
    "TrainingHealthMonitor",
    "TrainingTriggers",
    "TriggerConfig",
    "TriggerDecision",
    "decide",
    "decide_all",
    "get_curriculum_feedback",
    "get_training_health_monitor",
    "ingest_evaluation_games",
    "is_bootstrap",
    "pairwise_outcome",
    "status_line",
]
