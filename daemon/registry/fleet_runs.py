"""The fleet's run history, kept with the registry of record (DESIGN 11).

Every node records its runs here, so the minimum interval, "new games since the last run"
and failure alerts hold fleet-wide: a success on node B is the config's last success for
node A too. A run's config and start time are fixed by its first record; a finished run
(state in ``FINAL_STATES``) is never changed again.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from daemon.keys import validate_config_key
from daemon.registry.backend import RecordStore, Row
from daemon.registry.records import FleetRun, RegistryError, check_token, utc
from daemon.runs.journal import FINAL_STATES, STATES

log = structlog.get_logger(__name__)


def _ts(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


def _run(r: Row) -> FleetRun:
    started, updated = _ts(r["started_at"]), _ts(r["updated_at"])
    assert started is not None and updated is not None
    return FleetRun(
        run_id=r["run_id"],
        config_key=r["config_key"],
        node=r["node"],
        state=r["state"],
        started_at=started,
        updated_at=updated,
        finished_at=_ts(r["finished_at"]),
        usable_games=r["usable_games"],
        model_id=r["model_id"],
        message=r["message"],
        fencing_token=r["fencing_token"],
    )


class RegistryRuns:
    _records: RecordStore

    def record_run(
        self,
        run_id: str,
        config: str,
        state: str,
        *,
        now: datetime,
        node: str,
        usable_games: int | None = None,
        model_id: str | None = None,
        message: str | None = None,
        fencing_token: int | None = None,
        started_at: datetime | None = None,
    ) -> FleetRun:
        """Insert or advance run ``run_id``: the first record sets ``started_at`` (default
        ``now``; a run first recorded when it ends passes its real start, so the history keeps
        its interval); a final state sets ``finished_at = now``. Fields given as None keep their
        recorded value."""
        validate_config_key(config)
        if state not in STATES:
            raise RegistryError(f"unknown run state {state!r}: expected one of {', '.join(STATES)}")
        check_token(fencing_token)
        at = utc(now).isoformat()
        start = utc(started_at).isoformat() if started_at is not None else at
        row: Row = dict(
            run_id=run_id, config_key=config, node=node, state=state, started_at=start, updated_at=at,
            finished_at=at if state in FINAL_STATES else None, usable_games=usable_games,
            model_id=model_id, message=message, fencing_token=fencing_token,
        )  # fmt: skip
        changed = self._records.upsert_run(row)
        stored = _run(self._records.runs(run_id=run_id)[0])
        if not changed:
            if stored.config_key != config:
                raise RegistryError(f"run {run_id} belongs to {stored.config_key}, not {config}")
            log.warning("registry.run_final", run_id=run_id, state=stored.state, ignored=state)
        return stored

    def get_run(self, run_id: str) -> FleetRun | None:
        rows = self._records.runs(run_id=run_id)
        return _run(rows[0]) if rows else None

    def recent_runs(self, config: str | None = None, limit: int = 20) -> list[FleetRun]:
        """Newest first (by start), across every node."""
        if config is not None:
            validate_config_key(config)
        return [_run(r) for r in self._records.runs(config=config, limit=limit)]

    def last_run(self, config: str) -> FleetRun | None:
        """The config's most recently started run on any node, in whatever state."""
        rows = self._records.runs(config=validate_config_key(config), limit=1)
        return _run(rows[0]) if rows else None

    def last_success(self, config: str) -> FleetRun | None:
        rows = self._records.runs(config=validate_config_key(config), state="succeeded", limit=1)
        return _run(rows[0]) if rows else None
