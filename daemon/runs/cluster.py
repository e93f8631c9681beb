"""What every node must know about runs done elsewhere.

Each node keeps its own journal and registry; with the Redis backend, the last
finished and last successful run of each config are also published in Redis
(``{prefix}run:{config}``), so a node never retrains a config another node
just trained, and the minimum interval holds across the cluster. With file
locks (one node) the local journal is the whole truth and this is a no-op.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import redis
import structlog

from daemon.locks.backends.redis import sync_client
from daemon.redis_keys import run_key

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ClusterRun:
    finished_at: datetime
    state: str
    usable_games: int | None
    model_id: str | None
    node: str
    run_id: str | None = None
    # When the run started: the fleet's run history keeps each run's interval (None: unknown).
    started_at: datetime | None = None

    def as_json(self) -> str:
        started = self.started_at.isoformat() if self.started_at is not None else None
        fields = {**self.__dict__, "finished_at": self.finished_at.isoformat(), "started_at": started}
        return json.dumps(fields)

    @classmethod
    def from_json(cls, raw: str | bytes) -> ClusterRun:
        d: dict[str, Any] = json.loads(raw)
        return cls(
            datetime.fromisoformat(d["finished_at"]),
            d["state"],
            d.get("usable_games"),
            d.get("model_id"),
            d.get("node", "?"),
            d.get("run_id"),
            datetime.fromisoformat(d["started_at"]) if d.get("started_at") else None,
        )


@dataclass(frozen=True)
class ClusterView:
    last_success: dict[str, ClusterRun]
    last_finished: dict[str, ClusterRun]


EMPTY = ClusterView({}, {})


class RunHistory(Protocol):
    """Runs finished anywhere in the fleet: read by the evaluator, written by the pipeline."""

    def read(self, configs: list[str]) -> ClusterView: ...
    def publish(self, config: str, run: ClusterRun) -> None: ...


class ClusterState:
    """:class:`RunHistory` in Redis. Blocking Redis calls: run them in a worker thread.

    Inactive (a no-op) until :meth:`enable`: the service enables it only when the Redis lock
    backend was selected, so file-lock nodes never touch Redis.
    """

    def __init__(self) -> None:
        self.url: str | None = None
        self.password: str | None = None
        self.key_prefix = ""
        self.timeout = 2.0

    def enable(self, url: str, password: str | None, key_prefix: str, timeout: float) -> None:
        self.url, self.password, self.key_prefix, self.timeout = url, password, key_prefix, timeout

    def _key(self, config: str) -> str:
        return run_key(self.key_prefix, config)

    def read(self, configs: list[str]) -> ClusterView:
        if self.url is None:
            return EMPTY
        client = sync_client(self.url, self.password, self.timeout)
        try:
            pipe = client.pipeline(transaction=False)
            for key in configs:
                pipe.hgetall(self._key(key))
            rows = pipe.execute()
        except redis.RedisError as e:
            log.warning("cluster.read_failed", reason=str(e))
            return EMPTY
        finally:
            client.close()
        ok: dict[str, ClusterRun] = {}
        fin: dict[str, ClusterRun] = {}
        for key, row in zip(configs, rows, strict=True):
            if row.get(b"success"):
                ok[key] = ClusterRun.from_json(row[b"success"])
            if row.get(b"finished"):
                fin[key] = ClusterRun.from_json(row[b"finished"])
        return ClusterView(ok, fin)

    def publish(self, config: str, run: ClusterRun) -> None:
        """Record a finished run (called while the run still holds the config's lease)."""
        if self.url is None:
            return
        client = sync_client(self.url, self.password, self.timeout)
        try:
            pipe = client.pipeline(transaction=True)
            pipe.hset(self._key(config), "finished", run.as_json())
            if run.state == "succeeded":
                pipe.hset(self._key(config), "success", run.as_json())
            pipe.execute()
        except redis.RedisError as e:
            log.warning("cluster.publish_failed", config=config, reason=str(e))
        finally:
            client.close()
