"""The composition root's parts: every long-lived object, built from one Settings.

``build_components`` is called once by the service (and by ``train``); nothing
in the package reaches these objects through a global.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import redis
import structlog
from prometheus_client import CollectorRegistry

from daemon import __version__
from daemon.data.gamedb import GameDBError
from daemon.data.sources import GameSources
from daemon.decide.curriculum import CurriculumFeedback
from daemon.decide.health import TrainingHealthMonitor
from daemon.decide.triggers import TrainingTriggers
from daemon.locks import DistributedLock, select_backend
from daemon.locks.backends.redis import sync_client
from daemon.locks.names import redis_keys
from daemon.registry import ModelRegistry
from daemon.registry.records import FencingTokenRejected
from daemon.runs.cluster import ClusterRun, ClusterState
from daemon.runs.journal import RunJournal
from daemon.service.metrics import build_registry
from daemon.service.notify import child_env
from daemon.service.view import ServiceView
from daemon.settings import Settings
from daemon.training.args import TrainerArgs
from daemon.training.runner import TrainerOutcome, TrainerRunner

log = structlog.get_logger(__name__)


class Components:
    def __init__(self, settings: Settings, environ: dict[str, str], *, read_only: bool = False) -> None:
        self.settings = settings
        self.environ = environ
        # read_only (status): every state store is an in-memory copy; nothing is created or written.
        self.read_only = read_only
        self.node = socket.gethostname()
        s = settings
        self.view = ServiceView.empty(list(s.configs), __version__)
        self.prom: CollectorRegistry
        self.prom, self.metrics = build_registry(list(s.configs), lambda: self.view)
        self.journal = RunJournal(
            s.state_dir / "runs.db", node=self.node, pid=os.getpid(), read_only=read_only
        )
        self.health = TrainingHealthMonitor.from_settings(
            s.state_dir / "decide.db", s.health, configs=s.configs, read_only=read_only
        )
        self.curriculum = CurriculumFeedback.from_settings(
            s.state_dir / "decide.db", s.curriculum, configs=s.configs, read_only=read_only
        )
        self.triggers = TrainingTriggers.from_settings(s.triggers)
        self.models = ModelRegistry(s.registry_dir, read_only=read_only)
        self.sources = GameSources(s.game_dbs, s.configs, on_change=self._source_changed)
        self.runner = TrainerRunner(
            timeout=s.training.timeout,
            grace=s.training.grace,
            heartbeat_timeout=s.training.heartbeat_timeout,
            state_dir=s.state_dir / "trainers",
            env=child_env(environ),
            nproc_per_node=s.training.nproc_per_node,
        )
        self.cluster = ClusterState(None, None, "")
        self.lock_backend = "file"
        self.lock_backend_reason = ""
        self.progress: dict[str, dict[str, Any]] = {}
        self._source_changes: deque[tuple[str, bool, str | None]] = deque()

    async def start(self) -> None:
        s = self.settings
        if not self.read_only:
            for d in (s.data_dir, s.state_dir, s.training_dir, s.lock_dir, s.registry_dir, s.runs_dir):
                d.mkdir(parents=True, exist_ok=True)
        self.journal.open()
        self.health.open()
        self.curriculum.open()
        self.models.open()
        self.lock_backend, self.lock_backend_reason, available = await asyncio.to_thread(self._select_backend)
        if not available:
            # backend "redis" with Redis down: fail closed; runs are refused with this reason.
            # Raised here, on the loop thread: the health store's connection belongs to it.
            self.set_lock_available(False, self.lock_backend_reason)
        r = s.redis
        if self.lock_backend == "redis" and r is not None:
            self.cluster = ClusterState(r.url, r.resolved_password(), r.key_prefix, r.connect_timeout)
        self.view.lock_backend = self.lock_backend
        self.view.lock_backend_reason = self.lock_backend_reason
        if not self.read_only:
            log.info("lock.backend_selected", backend=self.lock_backend, reason=self.lock_backend_reason)

    async def close(self) -> None:
        await asyncio.to_thread(self.sources.close)
        self.models.close()
        self.curriculum.close()
        self.health.close()
        self.journal.close()

    # -- locks ------------------------------------------------------------------
    def _redis_kwargs(self) -> dict[str, Any]:
        r = self.settings.redis
        if r is None:
            return {"redis_url": None}
        return {"redis_url": r.url, "key_prefix": r.key_prefix, "password": r.resolved_password()}

    def _select_backend(self) -> tuple[str, str, bool]:
        r = self.settings.redis
        sel = select_backend(
            self.settings.locks.backend, r.url if r else None, password=r.resolved_password() if r else None
        )
        self.view.redis_up = None if r is None else sel.backend == "redis" and sel.available
        return sel.backend, sel.reason, sel.available

    def set_lock_available(self, available: bool, reason: str) -> None:
        """Raise (or resolve) the lock_unavailable alert; call on the loop thread."""
        if self.lock_backend == "redis":
            self.view.redis_up = available
        self.health.set_condition(
            None,
            "lock_unavailable",
            active=not available,
            severity="critical",
            message=reason,
            now=datetime.now(UTC),
        )

    def make_lock(self, key: str, on_lost: Callable[..., None]) -> DistributedLock:
        r = self.settings.redis
        # auto resolved once at start-up: nodes must not flip between backends per run.
        backend: Literal["redis", "file"] = "redis" if self.lock_backend == "redis" else "file"
        return DistributedLock(
            f"training:{key}",
            ttl=r.ttl if r else 60.0,
            backend=backend,
            lock_dir=self.settings.lock_dir,
            on_lost=on_lost,
            fence_floor=lambda: self.models.highest_token(key),
            **self._redis_kwargs(),
        )

    # -- steps (blocking ones run in a worker thread) -----------------------------
    def export(self, key: str, force: bool, db_paths: list[Path] | None) -> Any:
        from daemon.export.job import run_export

        return run_export(self.settings, key, force=force, db_paths=db_paths)

    def parent_model(self, key: str) -> tuple[str, Path] | None:
        rec = self.models.get_production(key) or self.models.get_latest(key)
        return (rec.model_id, Path(rec.path)) if rec is not None else None

    def model_count(self, key: str) -> int:
        return len(self.models.list_models(config=key))

    async def train(
        self,
        key: str,
        run_id: str,
        export: Any,
        out_dir: Path,
        parent: tuple[str, Path] | None,
        token: int | None,
        cancel: asyncio.Event,
        on_progress: Callable[[dict[str, Any]], None],
    ) -> TrainerOutcome:
        t = self.settings.training
        es = export.settings  # the dynamic tier's epochs and batch size, unless settings pin them
        args = TrainerArgs(
            data=Path(export.output),
            out=out_dir,
            epochs=t.epochs or (es.epochs if es else 10),
            batch_size=t.batch_size or (es.batch_size if es else 128),
            data_hash=export.sha256,
            init=parent[1] if parent else None,
            device=t.device,
            fencing_token=token,
            run_id=run_id,
            parent=parent[0] if parent else None,
            channels=t.channels,
            blocks=t.blocks,
            lr=t.learning_rate,
        )
        outcome = await self.runner.run(args, on_progress=on_progress, cancel=cancel, run_id=run_id)
        if outcome.exit_name == "INIT_MISMATCH" and parent is not None:
            # The parent's architecture differs (settings changed): train from scratch.
            log.warning("trainer.init_mismatch", config=key, parent=parent[0])
            args = args.replace(init=None)
            outcome = await self.runner.run(args, on_progress=on_progress, cancel=cancel, run_id=run_id)
        return outcome

    def register(
        self,
        key: str,
        board: str,
        n: int,
        checkpoint: Path,
        export: Any,
        parent: tuple[str, Path] | None,
        token: int | None,
        run_id: str,
        metrics: dict[str, Any],
    ) -> str:
        t = self.settings.training
        return self.models.register(
            model_path=checkpoint,
            board_type=board,
            num_players=n,
            training_config={
                "channels": t.channels,
                "blocks": t.blocks,
                "epochs": t.epochs,
                "batch_size": t.batch_size,
                "learning_rate": t.learning_rate,
                "device": t.device,
            },
            metrics=metrics,
            source_data_paths=[str(p) for p in self.sources.paths()],
            parent_model_id=parent[0] if parent else None,
            fencing_token=token,
            run_id=run_id,
            data_path=Path(export.output),
            source_snapshot=getattr(export, "snapshot", None),
            fence_check=self.cluster_fence_check if self.lock_backend == "redis" else None,
        )

    def cluster_fence_check(self, config: str, token: int | None) -> None:
        """Refuse a registration whose token is older than the newest one Redis issued for the lock.

        Per-node registries only know their own tokens; this is the cluster-wide fence. Fails
        closed: if Redis cannot confirm, the lease cannot be trusted either.
        """
        r = self.settings.redis
        if r is None or token is None:
            return
        _, _, fence_key = redis_keys(r.key_prefix, f"training:{config}")
        client = sync_client(r.url, r.resolved_password(), r.connect_timeout)
        try:
            raw = client.get(fence_key)
        except redis.RedisError as e:
            raise FencingTokenRejected(config, token, -1) from e
        finally:
            client.close()
        issued = int(raw) if raw is not None else 0
        if token < issued:
            raise FencingTokenRejected(config, token, issued)

    def publish_run(self, key: str, state: str, usable_games: int | None, model_id: str | None) -> None:
        self.cluster.publish(key, ClusterRun(datetime.now(UTC), state, usable_games, model_id, self.node))

    def collect_evaluation_games(
        self, watermarks: dict[tuple[str, str], int]
    ) -> list[tuple[str, str, list[Any]]]:
        """New evaluation games per config (blocking: run in a thread). Advances ``watermarks``."""
        out: list[tuple[str, str, list[Any]]] = []
        sources = tuple(self.settings.curriculum.evaluation_sources)
        for key in self.settings.configs:
            model = self.models.get_production(key) or self.models.get_latest(key)
            if model is None:
                continue
            games: list[Any] = []
            for path in self.sources.paths():
                db = self.sources.db(path)
                snap = db.snapshot
                if snap is None or not snap.ok or key not in snap.configs:
                    continue
                mark = (str(path), key)
                try:
                    for g in db.iter_games(
                        key,
                        min_rowid=watermarks.get(mark, 0),
                        newest_first=False,
                        sources=sources,
                        upto_rowid=snap.configs[key].watermark,
                    ):
                        games.append(g)
                except GameDBError as e:
                    log.warning("curriculum.ingest_failed", source=str(path), reason=str(e))
                    continue
                watermarks[mark] = snap.configs[key].watermark
            if games:
                out.append((key, model.model_id, games))
        return out

    def on_trainer_progress(self, key: str, event: dict[str, Any]) -> None:
        if event.get("event") == "epoch":
            self.progress[key] = {
                k: float(event[k])
                for k in ("epoch", "train_loss", "val_loss", "samples_per_second")
                if k in event
            }

    def _source_changed(self, path: str, ok: bool, error: str | None) -> None:
        # Called from the poll's worker thread: only queue it (the health store's
        # SQLite connection belongs to the loop thread); apply_source_changes raises it.
        self._source_changes.append((path, ok, error))

    def apply_source_changes(self, now: datetime) -> None:
        """Raise/resolve ``source_unhealthy`` for the changes the last polls saw (loop thread)."""
        while self._source_changes:
            path, ok, error = self._source_changes.popleft()
            self.health.set_condition(
                None,
                "source_unhealthy",
                active=not ok,
                severity="warning",
                message=f"{path}: {error}" if error else f"{path} recovered",
                now=now,
                subject=path,
            )

    def features(self) -> dict[str, Any]:
        return {
            "lock_backend": self.lock_backend,
            "redis": self.settings.redis is not None,
            "encoder": self.settings.export.encoder,
            "device": self.settings.training.device,
            "torch_in_service": False,
            "game_dbs": [str(p) for p in self.sources.paths()],
        }


def build_components(settings: Settings, environ: dict[str, str], *, read_only: bool = False) -> Components:
    return Components(settings, environ, read_only=read_only)
