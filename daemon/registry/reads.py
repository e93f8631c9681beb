"""The registry's read side: records, lineage, history, and the warm-start parent chooser."""

from __future__ import annotations

from datetime import datetime

from daemon.keys import validate_config_key
from daemon.registry.backend import RecordStore, Row
from daemon.registry.records import STAGES, ModelNotFound, ModelRecord, RegistryError, StageEvent, from_json
from daemon.registry.store import ObjectStore

_JSON_COLUMNS = ("source_snapshot", "source_data_paths", "training_config", "metrics", "checkpoint_metadata")


class RegistryReads:
    """Reads over a record store and an object store (set by :class:`ModelRegistry`)."""

    _records: RecordStore
    store: ObjectStore

    def _record(self, r: Row) -> ModelRecord:
        d = dict(r)
        for col in _JSON_COLUMNS:
            d[col] = from_json(d[col])
        d["created_at"] = datetime.fromisoformat(d["created_at"])
        d["parent_external"] = bool(d.get("parent_external", False))
        return ModelRecord(path=self.store.locate(d["sha256"]), **d)

    def get_model(self, model_id: str) -> ModelRecord | None:
        rows = self._records.models(model_id=model_id)
        return self._record(rows[0]) if rows else None

    def require_model(self, model_id: str) -> ModelRecord:
        rec = self.get_model(model_id)
        if rec is None:
            raise ModelNotFound(model_id)
        return rec

    def list_models(self, config: str | None = None, stage: str | None = None) -> list[ModelRecord]:
        if config is not None:
            validate_config_key(config)
        if stage is not None:
            check_stage(stage)
        return [self._record(r) for r in self._records.models(config=config, stage=stage)]

    def get_production(self, config: str) -> ModelRecord | None:
        """The config's production model, whatever its status (a corrupt one shows as such)."""
        rows = self._records.models(config=validate_config_key(config), stage="production")
        return self._record(rows[0]) if rows else None

    def get_latest(self, config: str, *, stage: str | None = None) -> ModelRecord | None:
        """Newest usable (status ``ready``) version of ``config``, of any stage unless ``stage``."""
        if stage is not None:
            check_stage(stage)
        rows = self._records.models(
            config=validate_config_key(config), stage=stage, status="ready", newest_only=True
        )
        return self._record(rows[0]) if rows else None

    def warm_start_parent(self, config: str) -> ModelRecord | None:
        """What a new run of ``config`` starts from: the production model, else the newest
        ``candidate``; only ``ready`` ones (never ``rejected``, ``archived`` or ``corrupt``)."""
        prod = self.get_production(config)
        if prod is not None and prod.status == "ready":
            return prod
        return self.get_latest(config, stage="candidate")

    def get_history(self, model_id: str | None = None, config: str | None = None) -> list[StageEvent]:
        if model_id is None and config is not None:
            validate_config_key(config)
        rows = self._records.events(model_id=model_id, config=config)
        return [StageEvent(**{**r, "at": datetime.fromisoformat(r["at"])}) for r in rows]

    def get_lineage(self, model_id: str) -> list[ModelRecord]:
        """``model_id`` first, then its parent, grandparent ...; stops at a repeated id (cycle-safe)
        and at an external parent (not in this registry: see ``parent_external``)."""
        out: list[ModelRecord] = []
        seen: set[str] = set()
        cur: str | None = model_id
        while cur is not None and cur not in seen:
            rec = self.get_model(cur)
            if rec is None:
                if not out:
                    raise ModelNotFound(model_id)
                break
            seen.add(cur)
            out.append(rec)
            cur = None if rec.parent_external else rec.parent_model_id
        return out


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise RegistryError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    return stage
