"""The fleet's run history in the registry of record, and several histories read as one.

With a shared registry (PostgreSQL) every node sees every node's runs there; a Redis run
record (:class:`~daemon.runs.cluster.ClusterState`) still serves fleets whose nodes keep their
own registries. The service reads both and takes the newest of each.
"""

from __future__ import annotations

from collections.abc import Sequence

from daemon.registry.records import FleetRun
from daemon.registry.registry import ModelRegistry
from daemon.runs.cluster import ClusterRun, ClusterView, RunHistory


def _cluster_run(r: FleetRun) -> ClusterRun | None:
    if r.finished_at is None:
        return None
    return ClusterRun(r.finished_at, r.state, r.usable_games, r.model_id, r.node, r.run_id)


class RegistryHistory:
    """:class:`RunHistory` over the registry's ``runs`` table (blocking: run in a thread)."""

    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    def read(self, configs: list[str]) -> ClusterView:
        ok: dict[str, ClusterRun] = {}
        fin: dict[str, ClusterRun] = {}
        for key in configs:
            last_ok = self.models.last_success(key)
            if last_ok is not None and (run := _cluster_run(last_ok)) is not None:
                ok[key] = run
            for r in self.models.recent_runs(key, limit=5):  # newest start first
                if (run := _cluster_run(r)) is not None:
                    fin[key] = run
                    break
        return ClusterView(ok, fin)

    def publish(self, config: str, run: ClusterRun) -> None:
        self.models.record_run(
            run.run_id or f"{config}-{run.finished_at.isoformat()}",
            config,
            run.state,
            now=run.finished_at,
            node=run.node,
            usable_games=run.usable_games,
            model_id=run.model_id,
            started_at=run.started_at,
        )


class MergedHistory:
    """Several histories as one: every one is told each run; a read takes the newest of each."""

    def __init__(self, histories: Sequence[RunHistory]) -> None:
        self.histories = list(histories)

    def read(self, configs: list[str]) -> ClusterView:
        ok: dict[str, ClusterRun] = {}
        fin: dict[str, ClusterRun] = {}
        for h in self.histories:
            view = h.read(configs)
            for mine, theirs in ((ok, view.last_success), (fin, view.last_finished)):
                for key, run in theirs.items():
                    if key not in mine or run.finished_at > mine[key].finished_at:
                        mine[key] = run
        return ClusterView(ok, fin)

    def publish(self, config: str, run: ClusterRun) -> None:
        for h in self.histories:
            h.publish(config, run)
