"""The composition root: every long-lived object, built from one ``Settings``, and nothing else.

:func:`build_app` is called once by the service (and by ``train``, and read-only by
``status``); nothing in the package reaches these objects through a global. The run's steps
live in the objects built here (lock factory, exporter, training step, registrar, journal,
run history), and the pipeline and the evaluator receive them typed.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from daemon import __version__
from daemon.data.sources import GameSources
from daemon.decide.curriculum import CurriculumFeedback
from daemon.decide.health import TrainingHealthMonitor
from daemon.decide.store import DecideStore
from daemon.decide.triggers import TrainingTriggers
from daemon.export.exporter import Exporter
from daemon.locks.admin import ClusterFence
from daemon.locks.factory import LockFactory
from daemon.pipeline import OptimizedTrainingPipeline
from daemon.registry.records import RegistryError
from daemon.registry.registrar import Registrar
from daemon.registry.registry import ModelRegistry
from daemon.runs.cluster import ClusterState
from daemon.runs.fleet import MergedHistory, RegistryHistory
from daemon.runs.journal import RunJournal
from daemon.service.alerts import ServiceAlerts
from daemon.service.evaluator import Evaluator
from daemon.service.metrics import Metrics, build_registry
from daemon.service.notify import child_env
from daemon.service.promoter import Promoter
from daemon.service.view import ServiceView
from daemon.settings import Settings
from daemon.training.runner import TrainerRunner
from daemon.training.step import TrainStep

log = structlog.get_logger(__name__)


@dataclass
class App:
    settings: Settings
    node: str
    read_only: bool
    view: ServiceView
    prom: CollectorRegistry
    metrics: Metrics
    journal: RunJournal
    health: TrainingHealthMonitor
    curriculum: CurriculumFeedback
    triggers: TrainingTriggers
    models: ModelRegistry
    sources: GameSources
    runner: TrainerRunner
    cluster: ClusterState
    history: MergedHistory
    alerts: ServiceAlerts
    locks: LockFactory
    registrar: Registrar
    pipeline: OptimizedTrainingPipeline
    evaluator: Evaluator
    promoter: Promoter

    async def start(self) -> None:
        """Create the state directories, open the stores, choose the lock backend once."""
        s = self.settings
        if not self.read_only:
            for d in (s.data_dir, s.state_dir, s.training_dir, s.lock_dir, s.registry_dir, s.runs_dir):
                d.mkdir(parents=True, exist_ok=True)
        self.journal.open()
        self.health.open()
        self.curriculum.open()
        self.promoter.store.open()
        try:
            self.models.open()
        except RegistryError as e:  # e.g. PostgreSQL down: serve /metrics and status, dispatch nothing
            log.error("registry.unavailable", error=str(e))
            self.alerts.registry_availability(False, f"registry unavailable: {e}", datetime.now(UTC))
        await self.locks.start(announce=not self.read_only)
        backend = self.locks.backend
        self.alerts.lock_backend = backend
        self.view.redis_up = None if s.redis is None else backend == "redis" and self.locks.available
        if backend == "redis" and s.redis is not None:
            r = s.redis
            password = r.resolved_password()
            self.cluster.enable(r.url, password, r.key_prefix, r.connect_timeout)
            self.registrar.fence_check = ClusterFence(r.url, password, r.key_prefix, r.connect_timeout)
        self.view.lock_backend = backend
        self.view.lock_backend_reason = self.locks.reason

    async def close(self) -> None:
        await asyncio.to_thread(self.sources.close)
        self.models.close()
        self.curriculum.close()
        self.promoter.store.close()
        self.health.close()
        self.journal.close()


def features(settings: Settings, locks: LockFactory, sources: GameSources) -> dict[str, Any]:
    """What this node runs with (the pipeline's ``get_status().available_features``)."""
    return {
        "lock_backend": locks.backend,
        "redis": settings.redis is not None,
        "encoder": settings.export.encoder,
        "device": settings.training.device,
        "torch_in_service": False,
        "game_dbs": [str(p) for p in sources.paths()],
    }


def fence_floor(models: ModelRegistry) -> Callable[[str], int]:
    """The lowest token worth issuing for a config: the registry's highest accepted one.

    Only saves a doomed run (the registry refuses a lower token anyway, inside its write
    transaction); an unreachable registry gives 0, so the lock service still works and the
    refusal, if any, happens where the write lands."""

    def floor(config: str) -> int:
        try:
            return models.highest_token(config)
        except RegistryError as e:
            log.warning("lock.fence_floor_unavailable", config=config, reason=str(e))
            return 0

    return floor


def build_app(settings: Settings, environ: dict[str, str], *, read_only: bool = False) -> App:
    """Build every object (no I/O: :meth:`App.start` opens them).

    ``read_only`` (status): every state store is an in-memory copy; nothing is created or written.
    """
    s = settings
    node = socket.gethostname()
    view = ServiceView.empty(list(s.configs), __version__)
    prom, metrics = build_registry(list(s.configs), lambda: view)
    state = s.state_dir
    journal = RunJournal(state / "runs.db", node=node, pid=os.getpid(), read_only=read_only)
    health = TrainingHealthMonitor.from_settings(
        state / "decide.db", s.health, configs=s.configs, read_only=read_only
    )
    curriculum = CurriculumFeedback.from_settings(
        state / "decide.db", s.curriculum, configs=s.configs, read_only=read_only
    )
    triggers = TrainingTriggers.from_settings(s.triggers)
    models = ModelRegistry.from_settings(s, read_only=read_only)
    alerts = ServiceAlerts(health, view)
    sources = GameSources(s.game_dbs, s.configs, on_change=alerts.source_changed)
    t = s.training
    runner = TrainerRunner(
        timeout=t.timeout,
        grace=t.grace,
        heartbeat_timeout=t.heartbeat_timeout,
        state_dir=state / "trainers",
        env=child_env(environ),
        nproc_per_node=t.nproc_per_node,
    )
    cluster = ClusterState()  # enabled at start when the Redis lock backend is selected
    history = MergedHistory([RegistryHistory(models), cluster])
    locks = LockFactory(
        s.redis,
        s.locks,
        s.lock_dir,
        fence_floor=models.highest_token,
        on_availability=alerts.lock_availability,
    )
    registrar = Registrar(models, t, sources.paths)
    pipeline = OptimizedTrainingPipeline(
        locks=locks,
        exporter=Exporter(s, sources),
        trainer=TrainStep(runner, t),
        registrar=registrar,
        journal=journal,
        history=history,
        health=health,
        curriculum=curriculum,
        metrics=metrics,
        runs_dir=s.runs_dir,
        node=node,
        keep_failed_runs=s.training.keep_failed_runs,
        features=lambda: features(s, locks, sources),
    )
    evaluator = Evaluator(
        configs=s.configs,
        evaluation_sources=s.curriculum.evaluation_sources,
        sources=sources,
        journal=journal,
        history=history,
        models=models,
        curriculum=curriculum,
        health=health,
        triggers=triggers,
        alerts=alerts,
        view=view,
        pipeline=pipeline,
    )
    promoter = Promoter(
        configs=s.configs,
        settings=s.promotion,
        evaluation_sources=s.curriculum.evaluation_sources,
        models=models,
        sources=sources,
        store=DecideStore(state / "decide.db", read_only=read_only),
        locks=locks,
        metrics=metrics,
    )
    return App(
        settings=s,
        node=node,
        read_only=read_only,
        view=view,
        prom=prom,
        metrics=metrics,
        journal=journal,
        health=health,
        curriculum=curriculum,
        triggers=triggers,
        models=models,
        sources=sources,
        runner=runner,
        cluster=cluster,
        history=history,
        alerts=alerts,
        locks=locks,
        registrar=registrar,
        pipeline=pipeline,
        evaluator=evaluator,
        promoter=promoter,
    )
