"""The records a run leaves when it ends: journal, health, the fleet's history, its directory.

Each is one step on its own: a step that fails (a full disk, a registry that is down) is logged
as ``run.cleanup_failed`` with its name and neither skips the others nor keeps the config's lock
(the pipeline releases it after :meth:`RunBook.finish` returns, whatever happened here). A final
journal state that could not be written is kept and written before the next run starts, so
once the fault is gone the journal is complete again without a restart (DESIGN 13).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from daemon.decide.health import TrainingHealthMonitor
from daemon.runs.cluster import ClusterRun, RunHistory
from daemon.runs.journal import RunJournal
from daemon.runs.retention import prune_run_dirs

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RunEnd:
    """How one run ended, as the pipeline knows it."""

    key: str
    run_id: str
    state: str
    message: str
    model_id: str | None
    export_seconds: float
    training_seconds: float
    usable_games: int | None
    lost: bool  # the lease was lost: another holder may exist, so publish nothing
    stopped: bool  # the service stopped it (an operator stop): not a failure
    started_at: datetime | None = None  # the fleet's run history keeps each run's interval

    @property
    def final(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "message": self.message,
            "model_id": self.model_id,
            "export_seconds": self.export_seconds,
            "training_seconds": self.training_seconds,
        }


class RunBook:
    def __init__(
        self,
        journal: RunJournal,
        health: TrainingHealthMonitor,
        history: RunHistory,
        runs_dir: Path,
        keep_failed_runs: int,
        node: str,
    ) -> None:
        self.journal = journal
        self.health = health
        self.history = history
        self.runs_dir = runs_dir
        self.keep_failed_runs = keep_failed_runs
        self.node = node
        # Final journal states not written yet (the disk was full): run id -> columns.
        self.unrecorded: dict[str, dict[str, Any]] = {}

    def defer(self, run_id: str, final: dict[str, Any]) -> None:
        self.unrecorded[run_id] = final

    def retry_unrecorded(self) -> None:
        """Write the final states a fault kept from the journal (called before each run)."""
        for run_id, final in list(self.unrecorded.items()):
            try:
                self.journal.update(run_id, now=datetime.now(UTC), **final)
            except Exception as e:
                log.warning("run.record_retry_failed", run_id=run_id, error=f"{type(e).__name__}: {e}")
                return
            del self.unrecorded[run_id]
            log.info("run.recorded_late", run_id=run_id, state=final["state"])

    async def finish(self, end: RunEnd, active: Collection[str]) -> None:
        """Every record of ``end``; ``active``: run ids still going (their directories stay)."""
        now = datetime.now(UTC)
        if not _step(end, "journal", lambda: self.journal.update(end.run_id, now=now, **end.final)):
            self.defer(end.run_id, end.final)
        if end.stopped and not end.lost:
            # An operator stop is not a failure: no consecutive_failures alert on every restart.
            _step(end, "health", lambda: self.health.record_training_stopped(end.key, now=now))
        else:
            ok = end.state == "succeeded"
            _step(
                end,
                "health",
                lambda: self.health.record_training_complete(
                    end.key, success=ok, now=now, message=end.message
                ),
            )
        if not end.lost:  # still the holder: tell the other nodes (the caller then releases)
            done = ClusterRun(
                now, end.state, end.usable_games, end.model_id, self.node, end.run_id, end.started_at
            )
            try:
                await asyncio.to_thread(self.history.publish, end.key, done)
            except Exception as e:
                cleanup_failed(end.key, end.run_id, "history", e)
        await asyncio.to_thread(_step, end, "retention", lambda: self._retain(end, active))

    def _retain(self, end: RunEnd, active: Collection[str]) -> None:
        """A registered run's files are a copy of its registry object: remove them; keep the
        newest ``keep_failed_runs`` directories of runs that did not register (for a look)."""
        done = end.run_id if end.state == "succeeded" else None
        prune_run_dirs(self.runs_dir, self.keep_failed_runs, done=done, keep=active)


def _step(end: RunEnd, step: str, fn: Callable[[], object]) -> bool:
    try:
        fn()
    except Exception as e:
        cleanup_failed(end.key, end.run_id, step, e)
        return False
    return True


def cleanup_failed(key: str, run_id: str | None, step: str, e: BaseException) -> None:
    log.error("run.cleanup_failed", config=key, run_id=run_id, step=step, error=f"{type(e).__name__}: {e}")
