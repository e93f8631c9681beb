"""``kill -9`` of a fleet node at each step of registration, then a restart (DESIGN 11).

The node is a real ``daemon run`` process on the fleet's PostgreSQL and shared object
directory. In that child only, one function is wrapped so the process SIGSTOPs itself at a
named step, where the test SIGKILLs it:

* ``copied``: the model is staged in the shared store (the file store already renames it to
  its digest name there, so the config's write lock is held only for the row), no row;
* ``published``: inside the write transaction, the object confirmed, its row not committed;
* ``committed``: the row is committed, the node's journal still says ``registering``.

Then: no half-registered model (every row's object verifies, no row without its object, no
object left that a row does not name once GC's grace has passed), and the restarted node's
recovery agrees with the registry of record: the committed run is ``succeeded`` with its model
(in the journal and the fleet's run history) and is not trained again; an uncommitted one is
``interrupted`` and the config is trained again, as v1.
"""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.selfplay_sim import write_games
from tests.chaos._helpers import REPO, child_environ, start_service, wait_until
from tests.support.fleet import fleet_mapping, fleet_registry, log_tails, node_runs, write_node_config
from tests.support.procs import stop_all
from tests.support.redis_server import free_port

# Runs in the child before the service: SIGSTOP this process at one step of registration.
STOP_AT = r"""
import os, signal, sys, threading
from pathlib import Path
from daemon.registry.registrar import Registrar
from daemon.registry.registry import ModelRegistry
step, marker = sys.argv[1], Path(sys.argv[2])
# The kernel's SIGHUP to an orphaned process group with a stopped member (see freeze) must not
# end the node before the test's kill -9.
signal.signal(signal.SIGHUP, signal.SIG_IGN)

def freeze(point):
    marker.write_text(point)
    os.kill(os.getpid(), signal.SIGSTOP)
    # Continued anyway (the kernel sends SIGHUP + SIGCONT to a process group that becomes
    # orphaned while one of its members is stopped; seen twice under a nohup'd test run):
    # this step still never finishes.
    threading.Event().wait()

if step in ("copied", "published"):
    hook = ModelRegistry._call_hook
    def _call_hook(self, point):
        if point == step:
            freeze(point)
        hook(self, point)
    ModelRegistry._call_hook = _call_hook
else:
    register = Registrar.register
    def _register(self, *args, **kwargs):
        model_id = register(self, *args, **kwargs)
        freeze("committed")
        return model_id
    Registrar.register = _register
from daemon.cli import main
raise SystemExit(main(["run", "--config", sys.argv[3]]))
"""

# Two service starts and a retrain per step.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _ticks(port: int) -> int:
    """Decide ticks the service has run (``ringrift_tick_duration_seconds_count``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    m = re.search(r"^ringrift_tick_duration_seconds_count (\S+)$", body, re.M)
    assert m is not None, body[:2000]
    return int(float(m.group(1)))


@pytest.mark.parametrize("step", ["copied", "published", "committed"])
def test_kill_9_at_each_registration_step(tmp_path: Path, postgres_url: str, step: str) -> None:
    db, store = tmp_path / "games.db", tmp_path / "objects"
    write_games(db, "square8_2p", 40, seed=5)
    mapping = fleet_mapping(tmp_path, 0, db=db, configs=["square8_2p"], pg_url=postgres_url, store=store)
    cfg = write_node_config(tmp_path, 0, mapping)
    data = tmp_path / "node0"
    marker, log = tmp_path / "frozen-at", tmp_path / "first.log"
    with log.open("wb") as out:
        victim = subprocess.Popen(
            [sys.executable, "-c", STOP_AT, step, str(marker), str(cfg)],
            stdout=out, stderr=subprocess.STDOUT, env=child_environ(), cwd=REPO,
        )  # fmt: skip
    reg = fleet_registry(postgres_url, store, tmp_path)
    restarted: list[subprocess.Popen[bytes]] = []
    try:
        # The marker is written at the step, before the freeze: from then on the step never finishes.
        wait_until(lambda: marker.exists() and marker.read_text() == step, 240, 0.05, f"the node at {step}")
        victim.kill()  # kill -9 at that step
        assert victim.wait(timeout=30) == -9
        [run] = node_runs(data)
        assert run["state"] == "registering", run
        with reg:
            rows = reg.list_models()
            digests = sorted(p.name for p in (store / "sha256").iterdir())
            if step == "committed":
                [row] = rows
                assert (row.model_id, row.run_id) == ("square8_2p-v1", run["run_id"])
                assert digests == [f"{row.sha256}.pt"]
            else:  # an object no row names (young: GC keeps it for its grace)
                assert rows == [] and len(digests) == 1 and not digests[0].startswith("."), digests

        # The restarted node serves /metrics: its decide ticks are counted there.
        port = free_port()
        cfg = write_node_config(tmp_path, 0, {**mapping, "http": {"enabled": True, "port": port}})
        restarted.append(start_service(cfg, tmp_path / "restart.log"))

        def resolved() -> bool:
            assert restarted[0].poll() is None, log_tails([tmp_path / "restart.log"])
            runs = {r["run_id"]: r for r in node_runs(data)}
            return runs[run["run_id"]]["state"] in ("succeeded", "interrupted") and all(
                r["state"] in ("succeeded", "failed", "interrupted") for r in runs.values()
            )

        wait_until(resolved, 240, 0.1, "recovery of the killed run")
        if step != "committed":  # the config still has no model: it is trained again, as v1
            wait_until(
                lambda: resolved() and any(r["state"] == "succeeded" for r in node_runs(data)),
                240,
                0.1,
                "the retrain",
            )
        ticked = _ticks(port)
        wait_until(
            lambda: _ticks(port) >= ticked + 4, 240, 0.1, "four more decide ticks"
        )  # nothing else starts
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(timeout=30)
        stop_all(restarted)
    runs = {r["run_id"]: r for r in node_runs(data)}
    old = runs.pop(run["run_id"])
    with reg:
        [model] = reg.list_models()
        assert model.model_id == "square8_2p-v1", model
        fleet = reg.get_run(old["run_id"])
        if step == "committed":
            assert (old["state"], old["model_id"]) == ("succeeded", "square8_2p-v1"), old
            assert "recovered" in old["message"] and runs == {}, (old, runs)
            assert model.run_id == old["run_id"]
        else:
            assert old["state"] == "interrupted" and old["model_id"] is None, old
            [new] = runs.values()
            assert (new["state"], new["model_id"]) == ("succeeded", model.model_id), new
            assert model.run_id == new["run_id"]
        # The fleet's run history agrees with the node's journal.
        assert fleet is not None and (fleet.state, fleet.model_id) == (old["state"], old["model_id"]), fleet
        assert reg.verify() == []  # every row's object is whole
        # Past the grace, GC leaves exactly the objects rows name (the killed step's leftovers go).
        later = datetime.now(UTC) + timedelta(hours=2)
        reg.sweep_temp_files(now=later)
        reg.collect_garbage(now=later)
        assert sorted(p.name for p in (store / "sha256").iterdir()) == [f"{model.sha256}.pt"]
