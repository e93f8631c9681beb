"""Fencing checks and stage moves: candidate -> production | rejected; production -> archived.

Every move runs in the config's write transaction after the fencing check (DESIGN 4, 11), so a
holder whose lock was lost can neither register nor promote, and each move is a stage event.
"""

from __future__ import annotations

from datetime import datetime

import structlog

from daemon.keys import validate_config_key
from daemon.registry.backend import RecordTxn
from daemon.registry.reads import RegistryReads
from daemon.registry.records import (
    FencingTokenRejected,
    ModelCorrupt,
    Promotion,
    RegistryError,
    check_token,
    utc,
)

log = structlog.get_logger(__name__)


class RegistryStages(RegistryReads):
    require_token: bool

    # -- fencing --------------------------------------------------------------------
    def highest_token(self, config: str) -> int:
        """Highest fencing token accepted for ``config`` (0 if none): the lock counter's floor."""
        return self._records.last_token(validate_config_key(config))

    def highest_token_overall(self) -> int:
        return self._records.last_token_overall()

    @staticmethod
    def _raise_if_stale(config: str, token: int | None, highest: int | None) -> None:
        if token is not None and highest is not None and token < highest:
            log.warning("registry.rejected", config=config, token=token, highest=highest)
            raise FencingTokenRejected(config, token, highest)

    def _accept_token(self, txn: RecordTxn, config: str, token: int | None) -> None:
        """Conditional raise of the config's token inside the write transaction (anchors 1.4)."""
        if token is None:
            return
        if not txn.raise_token(config, token):
            self._raise_if_stale(config, token, txn.last_token(config))
            raise RegistryError(f"fencing update for {config} failed")  # unreachable in practice

    # -- stages ---------------------------------------------------------------------
    def promote(
        self,
        model_id: str,
        *,
        reason: str = "",
        fencing_token: int | None = None,
        now: datetime | None = None,
    ) -> Promotion:
        """Make ``model_id`` its config's production model; archive the previous one (same config only).

        The object's digest is re-checked first: a corrupt model is never promoted, nor a rejected one."""
        check_token(fencing_token)
        rec = self.require_model(model_id)
        if rec.stage == "rejected":
            raise RegistryError(f"promote {model_id}: it was rejected; a rejected model is never promoted")
        problem = self.store.check(rec.sha256, rec.size)
        if problem is not None:
            raise ModelCorrupt(model_id, f"{rec.path}: {problem}")
        at = utc(now).isoformat()
        config = rec.config_key
        with self._records.write(config) as txn:
            if fencing_token is None and self.require_token:
                raise RegistryError(f"promote {model_id}: a fencing token is required")
            self._accept_token(txn, config, fencing_token)
            row = txn.model(model_id)
            assert row is not None
            if row["status"] != "ready":
                raise ModelCorrupt(model_id, f"status is {row['status']}")
            if row["stage"] == "rejected":
                raise RegistryError(f"promote {model_id}: it was rejected meanwhile")
            previous = txn.production_id(config)
            if previous == model_id:
                return Promotion(model_id, config, None, changed=False)
            if previous is not None:
                txn.set_stage(previous, "archived")
                why = f"superseded by {model_id}"
                txn.add_event((previous, config, "stage", "production", "archived", why, at, fencing_token))
            txn.set_stage(model_id, "production")
            txn.add_event((model_id, config, "stage", row["stage"], "production", reason, at, fencing_token))
        log.info(
            "registry.promoted", config=config, model_id=model_id, previous=previous, token=fencing_token
        )
        return Promotion(model_id, config, previous, changed=True)

    def reject(
        self,
        model_id: str,
        *,
        reason: str = "",
        fencing_token: int | None = None,
        now: datetime | None = None,
    ) -> bool:
        """Mark a ``candidate`` ``rejected`` (evaluation said no): it never warm-starts a run or is
        served again. False if it already was rejected."""
        return self._move(model_id, "rejected", ("candidate",), reason, fencing_token, now)

    def archive(
        self,
        model_id: str,
        *,
        reason: str = "",
        fencing_token: int | None = None,
        now: datetime | None = None,
    ) -> None:
        self._move(model_id, "archived", ("candidate", "production"), reason, fencing_token, now)

    def _move(
        self,
        model_id: str,
        to: str,
        allowed: tuple[str, ...],
        reason: str,
        token: int | None,
        now: datetime | None,
    ) -> bool:
        check_token(token)
        rec = self.require_model(model_id)
        with self._records.write(rec.config_key) as txn:
            if token is None and self.require_token:
                raise RegistryError(f"{to} {model_id}: a fencing token is required")
            self._accept_token(txn, rec.config_key, token)
            row = txn.model(model_id)
            assert row is not None
            if row["stage"] == to:
                return False
            if row["stage"] not in allowed:
                only = " or ".join(allowed)
                raise RegistryError(f"{model_id} is {row['stage']}: only {only} can become {to}")
            txn.set_stage(model_id, to)
            at = utc(now).isoformat()
            txn.add_event((model_id, rec.config_key, "stage", row["stage"], to, reason, at, token))
        log.info(f"registry.{to}", config=rec.config_key, model_id=model_id, token=token)
        return True
