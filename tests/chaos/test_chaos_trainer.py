"""Trainer faults under the real service (in-process, real runner, real subprocesses):
a crash (non-zero exit), a hang (timeout), a NaN loss, an OOM-like SIGKILL.

The fault is injected at the trainer: the composition object's runner is wrapped so the
faulted config's first run gets a different command (a fake trainer script under tmp_path)
or extra test flags of the real trainer (``--debug-nan-at-step``), or has its trainer
SIGKILLed once it has started. The other config trains at the same time, unharmed (or, beside
the CPU-heavy real-trainer faults, still gets its decision).
Each: the run ends failed with the right reason, the alert is raised, nothing is registered,
no process is left, and the next run of the config works.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.selfplay_sim import write_games
from daemon.service.app import build_app
from daemon.service.evaluator import alert_dict
from daemon.service.supervisor import Service
from daemon.training.args import TrainerArgs
from daemon.training.pidrecords import record_path
from daemon.training.runner import TrainerOutcome, TrainerRunner
from tests.chaos._helpers import (
    assert_no_orphans,
    assert_no_torn_files,
    assert_registry_matches_journal,
    bounded,
    child_environ,
    failure_alert,
    journal_runs,
    kill_test_processes,
    node_mapping,
    pid_alive,
    registry_rows,
    settings_of,
)

KEY, OTHER = "square8_2p", "hex8_2p"
RUN_BOUND = 60.0  # a run takes ~5-15 s here; a stuck one fails the test, not the suite


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_test_processes(tmp_path)  # only after a failure is there anything left to end


CRASH = """
import json, sys, pathlib
argv = sys.argv[1:]
out = pathlib.Path(argv[argv.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
print(json.dumps({"event": "start", "samples": 1}), flush=True)
(out / "model.pt").write_bytes(b"half a checkpoint")  # a crash mid-save
print("Fatal Python error: Segmentation fault (simulated)", file=sys.stderr, flush=True)
sys.exit(1)
"""

HANG = """
import json, os, signal, sys, time, pathlib
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = os.fork()
if child == 0:  # a helper in the same process group, also deaf to SIGTERM
    time.sleep(600)
    os._exit(0)
pathlib.Path(sys.argv[1]).write_text(f"{os.getpid()} {child}")
print(json.dumps({"event": "start", "samples": 1}), flush=True)
time.sleep(600)
"""

Fault = Callable[
    [Callable[..., Awaitable[TrainerOutcome]], TrainerArgs, dict[str, Any]], Awaitable[TrainerOutcome]
]


class FaultyRunner:
    """Wraps ``TrainerRunner.run``: the first run of ``key`` goes through ``fault``."""

    def __init__(self, runner: TrainerRunner, key: str, fault: Fault) -> None:
        self.runner, self.key, self.fault = runner, key, fault
        self.orig = runner.run
        self.used = False
        runner.run = self.run  # type: ignore[method-assign]

    async def run(self, args: TrainerArgs, **kw: Any) -> TrainerOutcome:
        if kw["run_id"].startswith(self.key + "-") and not self.used:
            self.used = True
            return await self.fault(self.orig, args, kw)
        return await self.orig(args, **kw)


def _script(tmp: Path, name: str, body: str) -> Path:
    path = tmp / f"fake_{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


def crash_fault(tmp: Path) -> Fault:
    script = _script(tmp, "crash", CRASH)

    async def fault(orig: Any, args: TrainerArgs, kw: dict[str, Any]) -> TrainerOutcome:
        return await orig(args, **kw, argv=[sys.executable, str(script), *args.to_argv()])

    return fault


def hang_fault(tmp: Path, runner: TrainerRunner, pids: Path) -> Fault:
    script = _script(tmp, "hang", HANG)

    # A short timeout for this run only (the other config's trainer shares the runner).
    short = copy.copy(runner)
    short.timeout, short.grace = 2.0, 0.5

    async def fault(orig: Any, args: TrainerArgs, kw: dict[str, Any]) -> TrainerOutcome:
        argv = [sys.executable, str(script), str(pids), *args.to_argv()]
        return await TrainerRunner.run(short, args, **kw, argv=argv)

    return fault


def nan_fault() -> Fault:
    async def fault(orig: Any, args: TrainerArgs, kw: dict[str, Any]) -> TrainerOutcome:
        return await orig(dataclasses.replace(args, debug_nan_at_step=1), **kw)

    return fault


def oom_fault(state_dir: Path, killed: list[int]) -> Fault:
    async def fault(orig: Any, args: TrainerArgs, kw: dict[str, Any]) -> TrainerOutcome:
        progress = kw["on_progress"]
        run_id = kw["run_id"]

        def on_progress(event: dict[str, Any]) -> None:
            progress(event)
            if not killed:  # the kernel's OOM killer: SIGKILL to the trainer process only
                pid = int(__import__("json").loads(record_path(state_dir, run_id).read_text())["pid"])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        return await orig(args, **{**kw, "on_progress": on_progress})

    return fault


@pytest.mark.parametrize("kind", ["crash", "hang", "nan", "oom"])
async def test_trainer_fault_fails_run_and_next_run_works(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "games.db"
    write_games(db, KEY, 60, seed=1)
    # The other config trains beside the cheap fake faults; beside the real (CPU-heavy) trainer
    # faults it is below its bootstrap minimum and only gets a decision (keeps the suite fast).
    other_trains = kind in ("crash", "hang")
    write_games(db, OTHER, 60 if other_trains else 20, seed=2)
    data = node_mapping(tmp_path, db, [KEY, OTHER], training={"max_concurrent": 2})
    settings = settings_of(data)
    app = build_app(settings, child_environ())
    pids_file = tmp_path / "hang.pids"
    killed: list[int] = []
    fault = {
        "crash": lambda: crash_fault(tmp_path),
        "hang": lambda: hang_fault(tmp_path, app.runner, pids_file),
        "nan": nan_fault,
        "oom": lambda: oom_fault(app.runner.state_dir, killed),
    }[kind]()
    FaultyRunner(app.runner, KEY, fault)
    expected = {
        "crash": "INTERNAL_ERROR",
        "hang": "(timeout)",
        "nan": "DIVERGED",
        "oom": "SIGKILL",
    }[kind]

    service = Service(app, handle_signals=False)
    await service.start()
    try:
        now = datetime.now(UTC)
        report = await service.tick(now)
        reasons = {k: d.reason for k, d in report.decisions.items()}
        assert sorted(report.dispatched) == ([OTHER, KEY] if other_trains else [KEY]), reasons
        results = {
            r.config_key: r for r in await bounded(service.wait_runs(), RUN_BOUND, "the runs", tmp_path)
        }
        bad = results[KEY]
        if other_trains:
            assert results[OTHER].success, f"the other config did not train: {results[OTHER].message}"
        else:
            assert "bootstrap" in reasons[OTHER], reasons
        assert not bad.success and bad.state == "failed", bad
        assert expected in bad.message, bad.message
        assert bad.model_id is None
        assert [r["config_key"] for r in registry_rows(settings)] == ([OTHER] if other_trains else [])
        assert_no_orphans(tmp_path, settings)
        if kind == "hang":
            leader, helper = (int(p) for p in pids_file.read_text().split())
            assert not pid_alive(leader) and not pid_alive(helper), "the hung trainer's group survived"
        if kind == "oom":
            assert killed and not pid_alive(killed[0])
        alerts = [alert_dict(a) for a in service.app.health.get_health_status(now=now).active_alerts]
        alert = failure_alert(alerts, KEY)
        assert alert is not None and alert["severity"] == "warning", alerts
        assert failure_alert(alerts, OTHER) is None, alerts
        assert service.app.view.configs[KEY].consecutive_failures == 1

        # Next run of the faulted config (after its backoff) works; the other is not retrained.
        later = datetime.now(UTC) + timedelta(seconds=settings.triggers.min_interval + 1)
        report = await service.tick(later)
        assert report.dispatched == [KEY], {k: d.reason for k, d in report.decisions.items()}
        again = await bounded(service.wait_runs(), RUN_BOUND, "the runs", tmp_path)
        assert again[-1].config_key == KEY and again[-1].success, again[-1].message
        alerts = [alert_dict(a) for a in service.app.health.get_health_status().active_alerts]
        assert failure_alert(alerts, KEY) is None, alerts
    finally:
        kill_test_processes(tmp_path)  # a no-op unless a step got stuck: unblocks the drain
        await service.drain()
        await service.close()

    runs = journal_runs(settings)
    assert [r["state"] for r in runs if r["config"] == KEY] == ["failed", "succeeded"], runs
    expected_models = [f"{OTHER}-v1", f"{KEY}-v1"] if other_trains else [f"{KEY}-v1"]
    assert sorted(r["model_id"] for r in registry_rows(settings)) == expected_models
    assert_registry_matches_journal(settings)
    assert_no_torn_files(settings)
    assert_no_orphans(tmp_path, settings)
