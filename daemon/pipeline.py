"""One run, end to end: lock -> journal -> export -> train -> register -> release.

The lease is watched for the whole run: if it is lost at any step the trainer's
process group is stopped, nothing is registered, and the run ends
``interrupted``. The registry's fencing check is the last line of defence: a
writer whose token is older than the newest accepted one is refused.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from daemon.keys import parse_config_key, validate_config_key
from daemon.registry.records import FencingTokenRejected
from daemon.service.app import Components

log = structlog.get_logger(__name__)


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

    lock: Any
    lost: asyncio.Event


class _Interrupted(Exception):
    """The lease was lost (or the service is stopping): end the run ``interrupted``."""


class OptimizedTrainingPipeline:
    """Runs one pipeline pass per call; several configs may run concurrently."""

    def __init__(self, components: Components) -> None:
        self.c = components
        self.active: dict[str, dict[str, Any]] = {}
        self._stop: dict[str, asyncio.Event] = {}

    # -- status ---------------------------------------------------------------
    def get_status(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        c = self.c
        report = c.health.get_health_status(now=now)
        return {
            "health_status": report.status,
            "health_summary": report.summary,
            "available_features": c.features(),
            "active_runs": {k: dict(v) for k, v in self.active.items()},
            "curriculum_weights": c.curriculum.get_curriculum_weights(now=now),
            "recent_results": [r.as_dict() for r in c.journal.recent(limit=10)],
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

        lock = self.c.make_lock(key, on_lost)
        try:
            acquired = await lock.acquire_async(timeout=0)
        except Exception as e:  # backend unavailable (fail closed)
            log.warning("lock.unavailable", config=key, reason=str(e))
            self.c.set_lock_available(False, str(e))
            await _close_lock(lock)
            return f"lock unavailable: {e}"
        self.c.set_lock_available(True, f"lock backend {lock.backend} reachable again")
        if not acquired:
            await _close_lock(lock)
            return "lock is held by another run"
        return Lease(lock, lost)

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
        c = self.c
        t0 = time.monotonic()
        if lease is None:
            got = await self.acquire(key)
            if isinstance(got, str):
                return PipelineResult(False, got, key, state="skipped")
            lease = got
        lock, lost = lease.lock, lease.lost
        token = lock.fencing_token
        now = datetime.now(UTC)
        run_id = c.journal.start(key, now=now, usable_games=usable_games)
        c.journal.update(
            run_id, now=now, fencing_token=token, lock_backend=lock.backend, details={"reason": reason}
        )
        result = PipelineResult(
            False, "", key, run_id=run_id, state="pending", fencing_token=token, lock_backend=lock.backend
        )
        stop = self._stop[key] = asyncio.Event()
        self.active[key] = {
            "run_id": run_id,
            "state": "pending",
            "started_at": now.isoformat(),
            "fencing_token": token,
        }
        c.health.record_training_start(key, now=now, run_id=run_id)
        log.info("run.started", config=key, run_id=run_id, token=token, backend=lock.backend, reason=reason)
        try:
            await self._steps(key, run_id, lock, lost, stop, result, db_paths, force)
            result.success, result.state = True, "succeeded"
            result.message = f"registered {result.model_id}"
        except _Interrupted as e:
            result.state, result.message = "interrupted", str(e)
        except Exception as e:
            result.state, result.message = "failed", f"{type(e).__name__}: {e}"
            log.exception("run.error", config=key, run_id=run_id)
        finally:
            result.total_time = time.monotonic() - t0
            end = datetime.now(UTC)
            c.journal.update(
                run_id,
                now=end,
                state=result.state,
                message=result.message,
                model_id=result.model_id,
                export_seconds=result.export_time,
                training_seconds=result.training_time,
            )
            c.health.record_training_complete(key, success=result.success, now=end, message=result.message)
            if lost.is_set():
                c.metrics.lease_lost.labels(key).inc()
            c.metrics.runs.labels(key, result.state).inc()
            c.metrics.run_duration.labels(key).observe(result.total_time)
            self.active.pop(key, None)
            self._stop.pop(key, None)
            if not lost.is_set():  # still the holder: tell the other nodes, then release
                await asyncio.to_thread(c.publish_run, key, result.state, usable_games, result.model_id)
            await _close_lock(lock)  # release, and close its Redis connections (one lock object per run)
            log.info(
                f"run.{result.state}",
                config=key,
                run_id=run_id,
                message=result.message,
                model_id=result.model_id,
                seconds=round(result.total_time, 3),
            )
        return result

    def _check(self, lock: Any, lost: asyncio.Event, stop: asyncio.Event, step: str) -> None:
        if lost.is_set() or getattr(lock, "lost", False):
            raise _Interrupted(f"lease lost before {step}")
        if stop.is_set():
            raise _Interrupted(f"service stopping before {step}")

    def _state(self, key: str, run_id: str, state: str, **fields: Any) -> None:
        self.c.journal.update(run_id, now=datetime.now(UTC), state=state, **fields)
        if key in self.active:
            self.active[key]["state"] = state

    async def _steps(
        self,
        key: str,
        run_id: str,
        lock: Any,
        lost: asyncio.Event,
        stop: asyncio.Event,
        result: PipelineResult,
        db_paths: list[Path] | None,
        force: bool,
    ) -> None:
        c = self.c
        board, n = parse_config_key(key)
        self._check(lock, lost, stop, "export")
        self._state(key, run_id, "exporting")
        t = time.monotonic()
        try:
            export = await asyncio.to_thread(c.export, key, force, db_paths)
        except Exception:
            c.metrics.exports.labels(key, "error").inc()
            raise
        finally:
            result.export_time = time.monotonic() - t
            c.metrics.export_duration.labels(key).observe(result.export_time)
        c.metrics.exports.labels(key, "hit" if export.cache_hit else "miss").inc()
        result.cache_hit, result.samples = export.cache_hit, export.samples
        if not export.samples:
            raise RuntimeError(f"export produced no samples ({export.reason})")

        self._check(lock, lost, stop, "training")
        parent = c.parent_model(key)
        out_dir = c.settings.runs_dir / run_id
        self._state(
            key,
            run_id,
            "training",
            export_seconds=result.export_time,
            details={
                "export": {
                    "games": export.games,
                    "samples": export.samples,
                    "output": str(export.output),
                    "cache_hit": export.cache_hit,
                },
                "parent": parent[0] if parent else None,
            },
        )
        t = time.monotonic()
        cancel = asyncio.Event()

        async def watch() -> None:
            lost_w = asyncio.create_task(lost.wait())
            stop_w = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({lost_w, stop_w}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                lost_w.cancel()
                stop_w.cancel()
            cancel.set()

        watcher = asyncio.create_task(watch())
        try:
            outcome = await c.train(
                key,
                run_id,
                export,
                out_dir,
                parent,
                result.fencing_token,
                cancel,
                lambda ev: self._progress(key, ev),
            )
        finally:
            watcher.cancel()
            result.training_time = time.monotonic() - t
        result.trainer_exit = outcome.exit_name
        self._check(lock, lost, stop, "registration")
        if outcome.exit_code != 0 or outcome.checkpoint is None:
            raise RuntimeError(
                f"trainer exited {outcome.exit_name} ({outcome.reason}): "
                f"{' | '.join(outcome.stderr_tail[-3:]) if outcome.stderr_tail else ''}".strip()
            )
        last = outcome.last_progress or {}
        result.metrics = {
            k: last.get(k)
            for k in (
                "train_loss",
                "val_loss",
                "policy_accuracy",
                "best_val_loss",
                "val_policy_accuracy",
                "baseline_policy_accuracy",
                "epochs",
            )
            if k in last
        }

        self._state(key, run_id, "registering", training_seconds=result.training_time)
        self._check(lock, lost, stop, "registration")
        try:
            result.model_id = await asyncio.to_thread(
                c.register,
                key,
                board,
                n,
                outcome.checkpoint,
                export,
                parent,
                result.fencing_token,
                run_id,
                result.metrics,
            )
        except FencingTokenRejected as e:  # a newer holder exists: our lease was lost
            raise _Interrupted(str(e)) from e
        c.curriculum.record_training(key, now=datetime.now(UTC), model_count=c.model_count(key))

    def _progress(self, key: str, event: dict[str, Any]) -> None:
        if key in self.active:
            self.active[key]["progress"] = event
        self.c.on_trainer_progress(key, event)


async def _close_lock(lock: Any) -> None:
    try:
        await lock.aclose()
    except Exception as e:  # an expired lease cannot be released: the TTL frees it
        log.warning("lock.release_failed", lock=getattr(lock, "name", None), reason=str(e))
