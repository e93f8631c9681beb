"""One run, end to end: lock -> journal -> export -> train -> register -> release.

The pipeline reads top to bottom over small typed collaborators the composition root
(:mod:`daemon.service.app`) hands it: a lock factory, the exporter, the training step, the
registrar, the run journal and the fleet's run history. The lease is watched for the whole
run: if it is lost at any step the trainer's process group is stopped, nothing is
registered, and the run ends ``interrupted``. The registry's fencing check is the last line
of defence: a writer whose token is older than the newest accepted one is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from daemon.decide.curriculum import CurriculumFeedback
from daemon.decide.health import TrainingHealthMonitor
from daemon.export.exporter import Exporter
from daemon.export.job import ExportResult
from daemon.keys import validate_config_key
from daemon.locks.factory import LockFactory
from daemon.locks.lock import DistributedLock
from daemon.registry.records import FencingTokenRejected
from daemon.registry.registrar import Registrar
from daemon.runs.bookkeeping import RunBook, RunEnd
from daemon.runs.cluster import RunHistory
from daemon.runs.journal import RunJournal
from daemon.service.metrics import Metrics
from daemon.settings import DEFAULT_KEEP_FAILED_RUNS
from daemon.training.runner import TrainerOutcome
from daemon.training.step import Parent, TrainStep

log = structlog.get_logger(__name__)

# The warm-start parent's verified local copy, inside the run's directory.
PARENT_NAME = "parent.pt"
# The trainer's last progress fields that become the model's recorded metrics.
METRIC_KEYS = (
    "train_loss",
    "val_loss",
    "policy_accuracy",
    "best_val_loss",
    "val_policy_accuracy",
    "baseline_policy_accuracy",
    "epochs",
)


@dataclass
class PipelineResult:
    success: bool
    message: str
    config_key: str
    run_id: str | None = None
    state: str = "skipped"
    export_time: float = 0.0
    training_time: float = 0.0
    total_time: float = 0.0
    model_id: str | None = None
    fencing_token: int | None = None
    lock_backend: str | None = None
    cache_hit: bool | None = None
    samples: int | None = None
    trainer_exit: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Lease:
    """A held config lock and the event set when its lease is lost."""

    lock: DistributedLock
    lost: asyncio.Event


@dataclass
class _Run:
    """What one pass knows as it goes (the steps fill it in)."""

    key: str
    run_id: str
    lease: Lease
    stop: asyncio.Event
    result: PipelineResult
    export: ExportResult | None = None
    parent: Parent | None = None
    t0: float = field(default_factory=time.monotonic)
    started_at: datetime | None = None  # wall clock, for the fleet's run history


class _Interrupted(Exception):
    """The lease was lost (or the service is stopping): end the run ``interrupted``."""


class OptimizedTrainingPipeline:
    """Runs one pipeline pass per call; several configs may run concurrently."""

    def __init__(
        self,
        *,
        locks: LockFactory,
        exporter: Exporter,
        trainer: TrainStep,
        registrar: Registrar,
        journal: RunJournal,
        history: RunHistory,
        health: TrainingHealthMonitor,
        curriculum: CurriculumFeedback,
        metrics: Metrics,
        runs_dir: Path,
        node: str,
        features: Callable[[], dict[str, Any]] = dict,
        keep_failed_runs: int = DEFAULT_KEEP_FAILED_RUNS,
    ) -> None:
        self.locks = locks
        self.exporter = exporter
        self.trainer = trainer
        self.registrar = registrar
        self.journal = journal
        self.history = history
        self.health = health
        self.curriculum = curriculum
        self.metrics = metrics
        self.runs_dir = runs_dir
        self.node = node
        self.features = features
        self.book = RunBook(journal, health, history, runs_dir, keep_failed_runs, node)
        self.active: dict[str, dict[str, Any]] = {}
        # Last epoch line of each config's running trainer (for /metrics and status).
        self.progress: dict[str, dict[str, float]] = {}
        self._stop: dict[str, asyncio.Event] = {}

    # -- status ---------------------------------------------------------------
    def get_status(self, now: datetime) -> dict[str, Any]:
        report = self.health.get_health_status(now=now)
        return {
            "health_status": report.status,
            "health_summary": report.summary,
            "available_features": self.features(),
            "active_runs": {k: dict(v) for k, v in self.active.items()},
            "curriculum_weights": self.curriculum.get_curriculum_weights(now=now),
            "recent_results": [r.as_dict() for r in self.journal.recent(limit=10)],
        }

    def stop(self, config_key: str) -> None:
        """Ask a running pass to stop (service drain): it ends ``interrupted``."""
        ev = self._stop.get(config_key)
        if ev is not None:
            ev.set()

    # -- the run --------------------------------------------------------------
    async def acquire(self, config_key: str) -> Lease | str:
        """Take the config's lease without waiting: a :class:`Lease`, or why not (a string)."""
        key = validate_config_key(config_key)
        lost = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_lost(*_: Any) -> None:  # may be called from a renewal thread
            loop.call_soon_threadsafe(lost.set)

        lock = self.locks.make(key, on_lost)
        try:
            acquired = await lock.acquire_async(timeout=0)
        except Exception as e:  # backend unavailable (fail closed)
            log.warning("lock.unavailable", config=key, reason=str(e))
            self.locks.report(False, str(e))
            await _close_lock(lock)
            return f"lock unavailable: {e}"
        self.locks.report(True, f"lock backend {lock.backend} reachable again")
        if not acquired:
            await _close_lock(lock)
            return "lock is held by another run"
        return Lease(lock, lost)

    async def release(self, lease: Lease) -> None:
        """Give back a lease :meth:`acquire` took for a run that will not start."""
        await _close_lock(lease.lock)

    async def run_training(
        self,
        config_key: str,
        db_paths: list[Path] | None = None,
        *,
        force: bool = False,
        usable_games: int | None = None,
        reason: str = "",
        lease: Lease | None = None,
    ) -> PipelineResult:
        key = validate_config_key(config_key)
        t0 = time.monotonic()
        if lease is None:
            got = await self.acquire(key)
            if isinstance(got, str):
                return PipelineResult(False, got, key, state="skipped")
            lease = got
        # From here on the lock is held: whatever fails (a full disk in a journal write, a bug),
        # the finally below releases it and the failure is logged (DESIGN 13, issue 17 item 7).
        result = PipelineResult(
            False, "", key, state="failed", fencing_token=lease.lock.fencing_token,
            lock_backend=lease.lock.backend,
        )  # fmt: skip
        try:
            await self._run_held(key, lease, result, db_paths, force, usable_games, reason)
        except Exception as e:  # not raised by a step (they are caught below): a cleanup bug
            result.success, result.state = False, "failed"
            result.message = result.message or f"{type(e).__name__}: {e}"
            log.exception("run.cleanup_failed", config=key, run_id=result.run_id, step="run")
        finally:
            result.total_time = time.monotonic() - t0
            await _close_lock(lease.lock)  # release, and close its connections (one lock per run)
        log.info(
            f"run.{result.state}",
            config=key,
            run_id=result.run_id,
            message=result.message,
            model_id=result.model_id,
            seconds=round(result.total_time, 3),
        )
        return result

    async def _run_held(
        self,
        key: str,
        lease: Lease,
        result: PipelineResult,
        db_paths: list[Path] | None,
        force: bool,
        usable_games: int | None,
        reason: str,
    ) -> None:
        """The run under its lock; every failure ends up in ``result`` (the caller releases)."""
        token, backend = result.fencing_token, result.lock_backend
        self.book.retry_unrecorded()
        now = datetime.now(UTC)
        try:
            run_id = self.journal.start(key, now=now, usable_games=usable_games)
            result.run_id = run_id
            self.journal.update(
                run_id, now=now, fencing_token=token, lock_backend=backend, details={"reason": reason}
            )
        except Exception as e:  # e.g. a full disk: nothing ran, so nothing to record but the release
            log.error("run.start_failed", config=key, token=token, error=f"{type(e).__name__}: {e}")
            result.message = f"could not journal the run: {type(e).__name__}: {e}"
            if result.run_id is not None:  # the row exists but is not complete: end it when we can
                self.book.defer(result.run_id, {"state": "failed", "message": result.message})
            return
        result.state = "pending"
        run = _Run(key, run_id, lease, asyncio.Event(), result, started_at=now)
        self._stop[key] = run.stop
        self.active[key] = {
            "run_id": run_id,
            "state": "pending",
            "started_at": now.isoformat(),
            "fencing_token": token,
        }
        log.info("run.started", config=key, run_id=run_id, token=token, backend=backend, reason=reason)
        try:
            self.health.record_training_start(key, now=now, run_id=run_id)
            await self._export(run, db_paths, force)
            outcome = await self._train(run)
            await self._register(run, outcome)
            result.success, result.state = True, "succeeded"
            result.message = f"registered {result.model_id}"
        except _Interrupted as e:
            result.state, result.message = "interrupted", str(e)
        except Exception as e:
            result.state, result.message = "failed", f"{type(e).__name__}: {e}"
            log.exception("run.error", config=key, run_id=run_id)
        finally:
            await self._finish(run, usable_games)

    # -- steps ------------------------------------------------------------------
    async def _export(self, run: _Run, db_paths: list[Path] | None, force: bool) -> None:
        key, result = run.key, run.result
        self._check(run, "export")
        self._state(run, "exporting")
        t = time.monotonic()
        try:
            export = await asyncio.to_thread(self.exporter.export, key, force=force, db_paths=db_paths)
        except Exception:
            self.metrics.exports.labels(key, "error").inc()
            raise
        finally:
            result.export_time = time.monotonic() - t
            self.metrics.export_duration.labels(key).observe(result.export_time)
        self.metrics.exports.labels(key, "hit" if export.cache_hit else "miss").inc()
        result.cache_hit, result.samples = export.cache_hit, export.samples
        if not export.samples:
            raise RuntimeError(f"export produced no samples ({export.reason})")
        run.export = export

    async def _train(self, run: _Run) -> TrainerOutcome:
        key, result, export = run.key, run.result, run.export
        assert export is not None
        self._check(run, "training")
        out_dir = self.runs_dir / run.run_id
        run.parent = await asyncio.to_thread(
            self.registrar.parent, key, out_dir / PARENT_NAME, now=datetime.now(UTC)
        )
        self._state(
            run,
            "training",
            export_seconds=result.export_time,
            details={
                "export": {
                    "games": export.games,
                    "samples": export.samples,
                    "output": str(export.output),
                    "cache_hit": export.cache_hit,
                },
                "parent": run.parent.model_id if run.parent else None,
            },
        )
        t = time.monotonic()
        cancel = asyncio.Event()
        watcher = asyncio.create_task(_cancel_on(cancel, run.lease.lost, run.stop))
        try:
            outcome = await self.trainer.run(
                key,
                run.run_id,
                export,
                out_dir,
                run.parent,
                result.fencing_token,
                cancel,
                lambda ev: self._progress(key, ev),
            )
        finally:
            watcher.cancel()
            result.training_time = time.monotonic() - t
        result.trainer_exit = outcome.exit_name
        return outcome

    async def _register(self, run: _Run, outcome: TrainerOutcome) -> None:
        key, result, export = run.key, run.result, run.export
        assert export is not None
        self._check(run, "registration")
        if outcome.exit_code != 0 or outcome.checkpoint is None:
            tail = " | ".join(outcome.stderr_tail[-3:]) if outcome.stderr_tail else ""
            raise RuntimeError(f"trainer exited {outcome.exit_name} ({outcome.reason}): {tail}".strip())
        last = outcome.last_progress or {}
        result.metrics = {k: last.get(k) for k in METRIC_KEYS if k in last}
        self._state(run, "registering", training_seconds=result.training_time)
        self._check(run, "registration")
        try:
            result.model_id = await asyncio.to_thread(
                self.registrar.register,
                key,
                outcome.checkpoint,
                export,
                run.parent,
                result.fencing_token,
                run.run_id,
                result.metrics,
            )
        except FencingTokenRejected as e:  # a newer holder exists, or none can be confirmed
            raise _Interrupted(f"lease lost at registration: {e}") from e
        self.curriculum.record_training(
            key, now=datetime.now(UTC), model_count=self.registrar.model_count(key)
        )

    async def _finish(self, run: _Run, usable_games: int | None) -> None:
        key, result, lost = run.key, run.result, run.lease.lost
        if lost.is_set():
            self.metrics.lease_lost.labels(key).inc()
        self.metrics.runs.labels(key, result.state).inc()
        self.metrics.run_duration.labels(key).observe(time.monotonic() - run.t0)
        self.active.pop(key, None)
        self._stop.pop(key, None)
        self.progress.pop(key, None)
        end = RunEnd(
            key, run.run_id, result.state, result.message, result.model_id, result.export_time,
            result.training_time, usable_games, lost=lost.is_set(),
            stopped=result.state == "interrupted" and run.stop.is_set(), started_at=run.started_at,
        )  # fmt: skip
        await self.book.finish(end, {str(a["run_id"]) for a in self.active.values()})

    # -- helpers ----------------------------------------------------------------
    def _check(self, run: _Run, step: str) -> None:
        if run.lease.lost.is_set() or run.lease.lock.lost:
            raise _Interrupted(f"lease lost before {step}")
        if run.stop.is_set():
            raise _Interrupted(f"service stopping before {step}")

    def _state(self, run: _Run, state: str, **fields: Any) -> None:
        self.journal.update(run.run_id, now=datetime.now(UTC), state=state, **fields)
        if run.key in self.active:
            self.active[run.key]["state"] = state

    def _progress(self, key: str, event: dict[str, Any]) -> None:
        if key in self.active:
            self.active[key]["progress"] = event
        if event.get("event") == "epoch":
            self.progress[key] = {
                k: float(event[k])
                for k in ("epoch", "train_loss", "val_loss", "samples_per_second")
                if k in event
            }


async def _cancel_on(cancel: asyncio.Event, *events: asyncio.Event) -> None:
    """Set ``cancel`` as soon as any of ``events`` is set (the trainer watches ``cancel``)."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    cancel.set()


async def _close_lock(lock: DistributedLock) -> None:
    try:
        await lock.aclose()
    except Exception as e:  # an expired lease cannot be released: the TTL frees it
        log.warning("lock.release_failed", lock=lock.name, reason=str(e))
