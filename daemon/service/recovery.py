"""Start-up recovery: end what a crashed predecessor left (orphan trainers, runs in flight).

Runs only under the instance lock (:mod:`daemon.service.instance`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from daemon.registry.records import RegistryError
from daemon.runs.journal import RunRecord
from daemon.training.pidrecords import reap_orphans

if TYPE_CHECKING:
    from daemon.service.app import App

log = structlog.get_logger(__name__)


async def recover(c: App, now: datetime) -> list[str]:
    """End what a crashed predecessor left: orphan trainer groups, runs still in flight."""
    killed = await asyncio.to_thread(reap_orphans, c.runner.state_dir, grace=c.settings.training.grace)
    if killed:
        log.warning("recovery.orphan_trainers_ended", pids=killed)
    resolved = []
    # Every run of this journal, whatever host name wrote it: the instance lock, taken before this,
    # proves no other process of this data directory is alive (a rescheduled pod has a new name).
    for run in c.journal.in_flight():
        model_id = _registered_by(c, run.config, run.run_id) if run.state == "registering" else None
        if model_id is not None:
            # Killed after the registry committed (fenced) but before the journal did: it succeeded.
            msg = f"registered {model_id} (recovered: the daemon stopped before recording it)"
            c.journal.update(run.run_id, now=now, state="succeeded", message=msg, model_id=model_id)
            c.health.record_training_complete(run.config, success=True, now=now, message=msg)
            c.metrics.runs.labels(run.config, "succeeded").inc()
            log.warning("run.succeeded", config=run.config, run_id=run.run_id, recovered=True)
            _tell_fleet(c, run, "succeeded", msg, model_id, now)
            resolved.append(run.run_id)
            continue
        msg = f"interrupted: the daemon stopped while the run was {run.state}"
        c.journal.update(run.run_id, now=now, state="interrupted", message=msg)
        c.health.record_training_complete(run.config, success=False, now=now, message=msg)
        c.metrics.runs.labels(run.config, "interrupted").inc()
        log.warning("run.interrupted", config=run.config, run_id=run.run_id, message=msg, recovered=True)
        _tell_fleet(c, run, "interrupted", msg, None, now)
        resolved.append(run.run_id)
    return resolved


def _tell_fleet(c: App, run: RunRecord, state: str, msg: str, model_id: str | None, now: datetime) -> None:
    """Record the recovered outcome in the fleet's run history (the registry of record), as the
    killed run would have: other nodes then count its games and its success. Only there: the
    history keeps each run's start, so a late record never hides a newer run (the Redis record
    holds just the last one). An unreachable registry only loses this record."""
    try:
        c.models.record_run(
            run.run_id, run.config, state, now=now, node=run.node, usable_games=run.usable_games,
            model_id=model_id, message=msg, fencing_token=run.fencing_token, started_at=run.started_at,
        )  # fmt: skip
    except RegistryError as e:
        log.warning("recovery.fleet_record_failed", config=run.config, run_id=run.run_id, reason=str(e))


def _registered_by(c: App, key: str, run_id: str) -> str | None:
    """The model a run registered, if its registration committed."""
    return next((m.model_id for m in c.models.list_models(config=key) if m.run_id == run_id), None)
