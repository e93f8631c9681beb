"""Three real services as one fleet (DESIGN 11): one redis-server, one PostgreSQL, one shared
object directory, the same game database; four configs get fresh data over three rounds.

What it shows: each config has one lineage ``v1 -> v2 -> v3`` whichever node trained each
version (a run's parent is the previous version, from the fleet's registry); model ids are
the fleet's (each one registered by exactly one run of one node); no two runs of a config
overlap (their intervals in the registry's fleet run history); every object verifies
(``registry verify``).

And the race behind "no run without fresh data": a node decides on the fleet's history as it
read it, then takes the lease; another node may finish the config's run (and release) in
between. The node decides again after taking the lease and trains nothing.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.pipeline import Lease
from daemon.registry import ModelRegistry
from daemon.selfplay_sim import write_games
from tests.chaos._helpers import child_environ, settings_of, start_service, wait_until
from tests.chaos._redis_helpers import running_service
from tests.support.fleet import fleet_mapping, fleet_registry, log_tails, node_runs, write_node_config
from tests.support.procs import stop_all
from tests.support.redis_server import RedisServer

CONFIGS = ["square8_2p", "square8_3p", "hex8_2p", "hex8_3p"]
NODES = 3
ROUNDS = 3
BOOTSTRAP = 30  # usable games for v1
FRESH = 20  # new usable games that train the next version
ROUND_TIMEOUT = 300.0  # generous: a 2-core machine shared with other test runs

# Three services train 12 models: minutes on a loaded 2-core machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _versions(reg: ModelRegistry) -> dict[str, list[int]]:
    return {key: sorted(m.version for m in reg.list_models(config=key)) for key in CONFIGS}


def _all_runs(tmp: Path) -> list[dict[str, Any]]:
    return [r | {"node": i} for i in range(NODES) for r in node_runs(tmp / f"node{i}")]


def _quiet(tmp: Path) -> bool:
    return all(r["state"] in ("succeeded", "failed", "interrupted") for r in _all_runs(tmp))


def _production(reg: ModelRegistry) -> dict[str, str | None]:
    return {key: (p.model_id if (p := reg.get_production(key)) else None) for key in CONFIGS}


def test_three_nodes_one_lineage_per_config(
    tmp_path: Path, redis_server: RedisServer, postgres_url: str
) -> None:
    db, store = tmp_path / "games.db", tmp_path / "objects"
    for i, key in enumerate(CONFIGS):
        write_games(db, key, BOOTSTRAP + 10, seed=i)
    configs = [
        write_node_config(
            tmp_path,
            i,
            fleet_mapping(
                tmp_path,
                i,
                db=db,
                configs=CONFIGS,
                pg_url=postgres_url,
                store=store,
                redis_url=redis_server.url,
                triggers={"bootstrap_min_games": BOOTSTRAP, "freshness_threshold": FRESH},
                # Every candidate is promoted by the node that takes the config's lease next, so
                # the next run warm-starts from it: the lineage is v1 -> v2 -> v3.
                promotion={"mode": "always"},
            ),
        )
        for i in range(NODES)
    ]
    logs = [tmp_path / f"node{i}.log" for i in range(NODES)]
    procs = [start_service(c, log) for c, log in zip(configs, logs, strict=True)]
    reg = fleet_registry(postgres_url, store, tmp_path)
    t0 = time.monotonic()
    try:
        for rnd in range(1, ROUNDS + 1):
            if rnd > 1:  # fresh data for every config: each trains its next version
                for i, key in enumerate(CONFIGS):
                    write_games(db, key, FRESH + 8, seed=100 * rnd + i)

            def done(want: int = rnd) -> bool:
                assert all(p.poll() is None for p in procs), log_tails(logs)
                prod = {key: f"{key}-v{want}" for key in CONFIGS}
                extra = any(len(v) > want for v in _versions(reg).values())  # fails below
                return (extra or _production(reg) == prod) and _quiet(tmp_path)

            wait_until(done, ROUND_TIMEOUT, 0.25, f"round {rnd}: v{rnd} of every config in production")
            assert _versions(reg) == {key: list(range(1, rnd + 1)) for key in CONFIGS}, (
                "a config trained without fresh data",
                _versions(reg),
                log_tails(logs),
            )
        elapsed = time.monotonic() - t0
        time.sleep(3.0)  # a few decide ticks (0.5 s): no node trains again without new data
        assert _versions(reg) == {key: [1, 2, 3] for key in CONFIGS}, _versions(reg)
    finally:
        stop_all(procs)
    assert [p.returncode for p in procs] == [0] * NODES, log_tails(logs)

    runs = _all_runs(tmp_path)
    by_run = {r["run_id"]: r for r in runs}
    assert len(by_run) == len(runs), "a run id was used by two nodes"
    succeeded = [r for r in runs if r["state"] == "succeeded"]
    with reg:
        models = {m.model_id: m for m in reg.list_models()}
        # Ids are the fleet's: each model was registered by one succeeded run of one node.
        assert sorted(r["model_id"] for r in succeeded) == sorted(models), (succeeded, sorted(models))
        trained_on = {}
        for m in models.values():
            run = by_run[m.run_id or ""]
            assert run["state"] == "succeeded" and run["model_id"] == m.model_id, (m, run)
            assert run["fencing_token"] == m.fencing_token, (m, run)
            trained_on[m.model_id] = run["node"]
        # One lineage per config, across nodes: vN's parent is v(N-1), whoever trained it.
        cross = 0
        for key in CONFIGS:
            chain = [models[f"{key}-v{v}"] for v in (1, 2, 3)]
            assert chain[0].parent_model_id is None, chain[0]
            for prev, cur in itertools.pairwise(chain):
                assert (cur.parent_model_id, cur.parent_version) == (prev.model_id, prev.version), cur
                cross += trained_on[prev.model_id] != trained_on[cur.model_id]
            assert [m.model_id for m in reg.get_lineage(f"{key}-v3")] == [f"{key}-v{v}" for v in (3, 2, 1)]
        assert len(set(trained_on.values())) >= 2, f"the work was not shared: {trained_on}"
        assert cross >= 1, f"every lineage stayed on one node: {trained_on}"
        # No two runs of a config at once: the fleet run history's intervals never overlap.
        for key in CONFIGS:
            fleet = sorted(reg.recent_runs(key, limit=100), key=lambda r: r.started_at)
            assert sorted(r.run_id for r in fleet) == sorted(r["run_id"] for r in runs if r["config"] == key)
            assert [r.state for r in fleet] == ["succeeded"] * 3, fleet
            for a, b in itertools.pairwise(fleet):
                assert a.finished_at is not None and a.started_at < a.finished_at <= b.started_at, (a, b)
    # Every object verifies, read through a node's own settings.
    res = subprocess.run(
        [sys.executable, "-m", "daemon", "registry", "verify", "--json", "--config", str(configs[1])],
        capture_output=True,
        text=True,
        env=child_environ(),
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"checked": 12, "problems": []}
    print(f"fleet: 3 rounds x 4 configs on 3 nodes in {elapsed:.0f}s")


async def test_a_run_finished_elsewhere_after_the_read_is_not_repeated(
    tmp_path: Path, postgres_url: str
) -> None:
    db, store = tmp_path / "games.db", tmp_path / "objects"
    usable = write_games(db, "square8_2p", BOOTSTRAP + 10, seed=1)
    settings = settings_of(
        fleet_mapping(tmp_path, 0, db=db, configs=["square8_2p"], pg_url=postgres_url, store=store)
    )
    model = tmp_path / "elsewhere.pt"
    model.write_bytes(b"a model another node trained" * 100)
    async with running_service(settings) as svc:
        acquire = svc.pipeline.acquire

        async def acquire_after_another_node_trained(key: str) -> Lease | str:
            # Between this tick's read and its lease, another node trains v1 on the same games.
            with ModelRegistry(tmp_path / "other", url=postgres_url, store=str(store)) as other:
                other.register(model, "square8", 2, fencing_token=1, run_id="elsewhere")
                other.record_run(
                    "elsewhere", key, "succeeded", now=datetime.now(UTC), node="other-node",
                    usable_games=usable, model_id="square8_2p-v1", started_at=datetime.now(UTC),
                )  # fmt: skip
            return await acquire(key)

        svc.pipeline.acquire = acquire_after_another_node_trained  # type: ignore[method-assign]
        report = await svc.tick(datetime.now(UTC))
        assert report.dispatched == [], report
        assert not report.decisions["square8_2p"].should_train, report.decisions
        assert svc.app.journal.recent() == []
        svc.pipeline.acquire = acquire  # type: ignore[method-assign]
        again = await svc.tick(datetime.now(UTC))  # the lease was given back: a later tick can take it
        assert again.dispatched == [] and not again.decisions["square8_2p"].should_train
        lease = await svc.pipeline.acquire("square8_2p")
        assert isinstance(lease, Lease), lease
        await svc.pipeline.release(lease)
