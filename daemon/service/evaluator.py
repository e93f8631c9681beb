"""Glue between what was polled and what is decided: feeds the curriculum,
triggers and health monitor with the current numbers and publishes the result
to the in-memory view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from daemon.data.sources import GameSources, PollResult
from daemon.decide.curriculum import CurriculumFeedback
from daemon.decide.health import TrainingHealthMonitor
from daemon.decide.ingest import ingest_evaluation_games
from daemon.decide.triggers import TrainingTriggers
from daemon.registry.records import RegistryError
from daemon.registry.registry import ModelRegistry
from daemon.runs.cluster import EMPTY, ClusterView, RunHistory
from daemon.runs.journal import RunJournal
from daemon.service.alerts import ServiceAlerts
from daemon.service.ingestion import Watermarks, collect_evaluation_games
from daemon.service.view import ServiceView

if TYPE_CHECKING:
    from daemon.pipeline import OptimizedTrainingPipeline

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ModelFacts:
    """What a tick needs of the registry about one config, read once per tick."""

    count: int
    latest_id: str | None
    latest_created: datetime | None
    production_id: str | None


@dataclass
class Decision:
    key: str
    should_train: bool
    reason: str
    priority: float
    signal_scores: dict[str, float] = field(default_factory=dict)
    curriculum_weight: float = 1.0


class Evaluator:
    """Each tick's decisions from what the poll saw, the journal, the fleet's runs and the registry."""

    def __init__(
        self,
        *,
        configs: Sequence[str],
        evaluation_sources: Sequence[str],
        sources: GameSources,
        journal: RunJournal,
        history: RunHistory,
        models: ModelRegistry,
        curriculum: CurriculumFeedback,
        health: TrainingHealthMonitor,
        triggers: TrainingTriggers,
        alerts: ServiceAlerts,
        view: ServiceView,
        pipeline: OptimizedTrainingPipeline,
    ) -> None:
        self.configs = list(configs)
        self.evaluation_sources = tuple(evaluation_sources)
        self.sources = sources
        self.journal = journal
        self.history = history
        self.models = models
        self.curriculum = curriculum
        self.health = health
        self.triggers = triggers
        self.alerts = alerts
        self.view = view
        self.pipeline = pipeline
        self.poll: PollResult | None = None
        self._last_usable: dict[str, int] = {}
        self.cluster: ClusterView = EMPTY
        self._eval_marks: Watermarks = {}
        # The last registry read that worked; kept while the registry is unreachable.
        self.models_facts: dict[str, ModelFacts] = {}
        self.registry_problem: str | None = None

    def apply_poll(self, poll: PollResult, now: datetime) -> None:
        self.poll = poll
        self.alerts.apply_source_changes(now)
        self.alerts.sources_polled(poll.sources.keys(), now)
        view = self.view
        view.sources = {
            path: {
                "ok": s.ok,
                "schema_version": s.schema_version,
                "orphans": len(s.orphans),
                "error": s.error,
                "warnings": list(s.warnings),
            }
            for path, s in poll.sources.items()
        }
        for key, totals in poll.configs.items():
            if totals.usable_games != self._last_usable.get(key):
                if key in self._last_usable and totals.usable_games > self._last_usable[key]:
                    self.health.record_data_update(key, game_count=totals.usable_games, now=now)
                self._last_usable[key] = totals.usable_games
            cv = view.configs[key]
            cv.usable_games = totals.usable_games
            cv.skipped = totals.skipped.as_dict()

    async def refresh_cluster(self) -> None:
        """Runs finished anywhere in the fleet (the registry's runs, and Redis's with that backend)."""
        try:
            self.cluster = await asyncio.to_thread(self.history.read, self.configs)
        except RegistryError as e:  # keep the last view; read_models raises the alert
            log.warning("cluster.read_failed", reason=str(e))

    def read_models(self, now: datetime) -> bool:
        """Read the registry facts of every config once (blocking, a few queries each).

        An unreachable registry (PostgreSQL down) keeps the last facts, raises the critical
        ``registry_unavailable`` alert and makes every decision wait: runs fail closed."""
        try:
            facts = {}
            corrupt: dict[str, list[str]] = {}
            for key in self.configs:
                models = self.models.list_models(config=key)
                corrupt[key] = [m.model_id for m in models if m.status == "corrupt"]
                latest = self.models.get_latest(key)
                prod = self.models.get_production(key)
                facts[key] = ModelFacts(
                    len(models),
                    latest.model_id if latest else None,
                    latest.created_at if latest else None,
                    prod.model_id if prod else None,
                )
        except RegistryError as e:
            self.registry_problem = f"registry unavailable: {e}"
            self.alerts.registry_availability(False, self.registry_problem, now)
            return False
        self.models_facts = facts
        for key, ids in corrupt.items():
            self.alerts.models_corrupt(key, ids, facts[key].production_id, now)
        if self.registry_problem is not None:
            self.registry_problem = None
            self.alerts.registry_availability(True, "registry reachable again", now)
        return True

    def _last(self, key: str, success: bool) -> tuple[datetime | None, int | None, str | None]:
        """(finished_at, usable_games, model_id) of the newest run here or on any node."""
        local = self.journal.last_success(key) if success else self.journal.last_finished(key)
        remote = (self.cluster.last_success if success else self.cluster.last_finished).get(key)
        best: tuple[datetime | None, int | None, str | None] = (None, None, None)
        if local is not None and local.finished_at is not None:
            best = (local.finished_at, local.usable_games, local.model_id)
        if remote is not None and (best[0] is None or remote.finished_at > best[0]):
            best = (remote.finished_at, remote.usable_games, remote.model_id)
        return best

    async def ingest(self, now: datetime) -> int:
        """Feed the curriculum with new evaluation games of each config's current model."""
        try:
            found = await asyncio.to_thread(
                collect_evaluation_games,
                self.configs,
                self.sources,
                self.models,
                self.evaluation_sources,
                self._eval_marks,
            )
        except RegistryError as e:  # nothing read: the watermarks did not move; next poll retries
            log.warning("curriculum.ingest_failed", reason=str(e))
            return 0
        n = 0
        for batch in found:
            report = ingest_evaluation_games(
                self.curriculum, batch.config, batch.games, batch.model_id, lineage=batch.lineage, now=now
            )
            n += report.ingested
        return n

    def _new_games(self, key: str, usable: int) -> int:
        base = self._last(key, True)[1]
        return max(0, usable - (base or 0))

    def _facts(self, key: str) -> ModelFacts:
        return self.models_facts.get(key, ModelFacts(0, None, None, None))

    def _model_count(self, key: str) -> int:
        # A model trained on another node counts, even when that node keeps its own registry.
        return max(self._facts(key).count, 1 if self._last(key, True)[2] else 0)

    def decide(self, now: datetime, running: set[str]) -> dict[str, Decision]:
        if not self.read_models(now):
            problem = self.registry_problem or "registry unavailable"
            return {key: Decision(key, False, problem, 0.0) for key in self.configs}
        counts = {key: self._model_count(key) for key in self.configs}
        for key, models in counts.items():
            # The registry is the source of truth for model counts (models may predate decide.db).
            self.curriculum.set_model_count(key, models)
            self.health.set_model_count(key, models, now=now)
        for key, run in self.cluster.last_success.items():  # a success anywhere clears failures here
            self.health.record_fleet_success(key, run.finished_at, now=now)
        weights = self.curriculum.get_curriculum_weights(now=now)
        out: dict[str, Decision] = {}
        for key in self.configs:
            usable = self._last_usable.get(key, 0)
            models = counts[key]
            metrics = self.curriculum.get_config_metrics(key, now=now)
            if metrics.known_win_rate is not None:  # a small-sample rate is no evidence yet
                self.health.record_win_rate(key, win_rate=metrics.known_win_rate, now=now)
            latest_at = self._facts(key).latest_created
            self.triggers.update_config_state(
                key,
                games_count=usable,
                new_games=self._new_games(key, usable),
                win_rate=metrics.known_win_rate,
                model_count=models,
                last_training_time=self._last(key, True)[0] or latest_at,
                last_run_time=self._last(key, False)[0],
                curriculum_weight=weights.get(key, 1.0),
            )
            d = self.triggers.should_train(key, now=now)
            should, reason = d.should_train, d.reason
            if key in running:
                should, reason = False, f"run in progress ({reason})"
            out[key] = Decision(
                key, should, reason, float(d.priority), dict(d.signal_scores), weights.get(key, 1.0)
            )
        return out

    async def still_due(self, key: str, now: datetime, running: set[str]) -> Decision:
        """``key``'s decision again on a fresh read of the fleet's history and the registry: the
        tick decided on what it read before taking the lease, and another node may have finished
        this config's run in between (its success and its model were not in that read)."""
        await self.refresh_cluster()
        return self.decide(now, running)[key]

    def evaluate_health(self, now: datetime) -> None:
        """Raise/resolve alerts (writes the health store), then show the result."""
        self.health.evaluate(now=now)
        self.show_health(now)

    def show_health(self, now: datetime) -> None:
        """Copy the health report into the view (read-only: ``status`` uses it too)."""
        report = self.health.get_health_status(now=now)
        self.view.health = report.status
        self.view.health_summary = report.summary
        self.view.alerts = [alert_dict(a) for a in report.active_alerts]

    def publish(self, now: datetime, decisions: dict[str, Decision] | None, running: set[str]) -> None:
        view = self.view
        health = self.health.snapshot(now=now)["configs"]
        for key, cv in view.configs.items():
            if decisions is not None and key in decisions:
                d = decisions[key]
                cv.should_train, cv.reason, cv.priority = d.should_train, d.reason, d.priority
                cv.signal_scores = d.signal_scores
                cv.curriculum_weight = d.curriculum_weight
            cv.new_games = self._new_games(key, cv.usable_games)
            cv.is_running = key in running or key in self.pipeline.active
            run = self.pipeline.active.get(key)
            cv.run = dict(run) if run else None
            cv.trainer = dict(self.pipeline.progress.get(key, {})) if cv.is_running else {}
            facts = self._facts(key)
            cv.latest_model, cv.production_model = facts.latest_id, facts.production_id
            cv.model_count = self._model_count(key)
            cv.win_rate = self.curriculum.get_config_metrics(key, now=now).known_win_rate
            # The health monitor is the one count of failures since the last success.
            cv.consecutive_failures = int(health.get(key, {}).get("consecutive_failures", 0))
            last_ok = self._last(key, True)[0]
            cv.last_success_ts = last_ok.timestamp() if last_ok else None
            cv.alerts = [a for a in view.alerts if a.get("config") == key]


def alert_dict(a: Any) -> dict[str, Any]:
    sev = getattr(a, "severity", "")
    since: Any = getattr(a, "since", None)
    return {
        "severity": str(getattr(sev, "value", sev)).lower(),
        "kind": getattr(a, "kind", ""),
        "config": getattr(a, "config", None),
        "message": getattr(a, "message", ""),
        "since": since.isoformat() if hasattr(since, "isoformat") else since,
    }
