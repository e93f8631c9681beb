"""Verified use of stored models, and upkeep: fetch, pull, warm start, verify, temp sweep, GC.

A model whose object turns out missing, truncated or altered when it is read is marked
``corrupt`` (with a ``status`` event and a ``registry.corrupt`` error log, the alert) and is
never used again until ``verify()`` finds the object good. A store that cannot be reached
is an error of its own and marks nothing.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import structlog

from daemon.keys import validate_config_key
from daemon.registry.reads import RegistryReads, check_stage
from daemon.registry.records import (
    GcReport,
    ModelCorrupt,
    ModelRecord,
    NoModelAvailable,
    ObjectDamaged,
    RegistryError,
    VerifyProblem,
    utc,
)

log = structlog.get_logger(__name__)


class RegistryMaintenance(RegistryReads):
    gc_grace_seconds: float
    temp_grace_seconds: float

    def _set_status(self, rec: ModelRecord, status: str, why: str, at: str) -> bool:
        with self._records.write(rec.config_key) as txn:
            row = txn.model(rec.model_id)
            if row is None or row["status"] == status:
                return False
            txn.set_status(rec.model_id, status)
            txn.add_event((rec.model_id, rec.config_key, "status", row["stage"], row["stage"], why, at, None))
        return True

    # -- verified use ---------------------------------------------------------------
    def fetch(self, model_id: str, dest: Path | str, *, now: datetime | None = None) -> ModelRecord:
        """Copy ``model_id`` to ``dest`` (atomic; sha256 and size verified while copying).

        Raises :class:`ModelCorrupt` for a model already marked corrupt, and marks one whose
        object proves missing or altered (``dest`` is then untouched)."""
        rec = self.require_model(model_id)
        if rec.status != "ready":
            raise ModelCorrupt(model_id, f"status is {rec.status}; run `registry verify` after repairing it")
        try:
            self.store.fetch(rec.sha256, rec.size, Path(dest))
        except ObjectDamaged as e:
            if self._set_status(rec, "corrupt", f"fetch: {e.problem}", utc(now).isoformat()):
                log.error("registry.corrupt", model_id=model_id, problem=e.problem, object=e.location)
            raise ModelCorrupt(model_id, f"{e.location}: {e.problem}") from None
        return rec

    def pull(
        self, config: str, *, out: Path | str, stage: str = "production", now: datetime | None = None
    ) -> ModelRecord:
        """Fetch ``config``'s production model (or the newest ready one of ``stage``) to ``out``.

        Raises :class:`NoModelAvailable` when there is none, :class:`ModelCorrupt` when it is
        (or proves) corrupt: a worker never gets an unverified file."""
        validate_config_key(config)
        check_stage(stage)
        if stage == "rejected":
            raise RegistryError("rejected models are never served")
        production = stage == "production"
        rec = self.get_production(config) if production else self.get_latest(config, stage=stage)
        if rec is None:
            raise NoModelAvailable(config, stage)
        return self.fetch(rec.model_id, out, now=now)

    def warm_start(self, config: str, dest: Path | str, *, now: datetime | None = None) -> ModelRecord | None:
        """Fetch :meth:`warm_start_parent` to ``dest``; a parent that proves corrupt is marked and
        the next choice tried. None: nothing usable (train from scratch)."""
        while (rec := self.warm_start_parent(config)) is not None:
            try:
                return self.fetch(rec.model_id, dest, now=now)
            except ModelCorrupt:
                log.warning("registry.warm_start_skipped", config=config, model_id=rec.model_id)
        return None

    def verify(
        self, *, stage: str | None = None, mark: bool = True, now: datetime | None = None
    ) -> list[VerifyProblem]:
        """fsck: re-hash every model object (or one stage's); with ``mark``, set status ``corrupt``
        on a bad one and back to ``ready`` once it is good again (each change is an event)."""
        problems: list[VerifyProblem] = []
        at = utc(now).isoformat()
        for rec in self.list_models(stage=stage):
            problem = self.store.check(rec.sha256, rec.size)
            if problem is not None:
                problems.append(VerifyProblem(rec.model_id, problem))
            new_status = "ready" if problem is None else "corrupt"
            if mark and new_status != rec.status:
                self._set_status(rec, new_status, f"verify: {problem or 'ok'}", at)
                log.warning("registry.verified", model_id=rec.model_id, problem=problem)
        return problems

    # -- upkeep ---------------------------------------------------------------------
    def sweep_temp_files(self, *, now: datetime | None = None) -> list[str]:
        """Remove temp files older than the temp grace (dead writers'; safe beside live ones)."""
        removed = self.store.sweep_temp(utc(now).timestamp() - self.temp_grace_seconds)
        if removed:
            log.info("registry.temp_swept", count=len(removed))
        return removed

    def collect_garbage(self, *, now: datetime | None = None, grace_seconds: float | None = None) -> GcReport:
        """Sweep dead temp files and delete objects no row names, once older than the grace."""
        report = GcReport(temp_removed=self.sweep_temp_files(now=now))
        cutoff = utc(now).timestamp() - (self.gc_grace_seconds if grace_seconds is None else grace_seconds)
        # Listing (a large bucket takes a while) happens before the lock; only the orphans' checks
        # and deletes hold it.
        listed = list(self.store.objects())
        # With every writer excluded no registration is between publish and commit, so "no row" is
        # final; one that deduplicated onto an object removed here stores it again at publish.
        with self._records.write(None) as txn:
            known = txn.digests()
            for digest, listed_mtime in listed:
                if digest in known:
                    continue
                mtime = self.store.mtime(digest) if listed_mtime <= cutoff else listed_mtime
                if mtime is None:  # gone meanwhile
                    continue
                where = self.store.locate(digest)
                if mtime <= cutoff:
                    self.store.remove(digest)
                    report.orphans_removed.append(where)
                else:  # young: maybe a registration between its upload and its row
                    report.orphans_kept.append(where)
        if report.orphans_removed:
            log.info("registry.gc", removed=len(report.orphans_removed), kept=len(report.orphans_kept))
        return report
