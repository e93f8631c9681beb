"""Disk full after the config lock was taken (issue 17 item 7): the lock is released, the failure
logged, and the config trains again once space is back, without a restart.

The "disk" is ``RLIMIT_FSIZE`` (a write past it fails with EFBIG, as a full disk fails with
ENOSPC) in the real service process: it drops to 0 the moment the run journals its
``registering`` step, so that journal write fails and so does every write of the run's
cleanup (the final journal state, the health record, the fleet history in the registry). The
service's stderr is a pipe (not limited), so its log lines still reach the test. A thread in
the service lifts the limit when the test creates a flag file: "space is back".
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.locks.backends.file import inspect_lock_file, lock_path
from daemon.locks.factory import TRAINING_PURPOSE
from daemon.selfplay_sim import write_games
from tests.chaos._helpers import (
    REPO,
    assert_no_orphans,
    assert_no_torn_files,
    assert_registry_matches_journal,
    child_environ,
    journal_runs,
    kill_test_processes,
    node_mapping,
    registry_rows,
    settings_of,
    stop_service,
    wait_until,
    write_config,
)

KEY = "square8_2p"
BOUND = 300.0  # generous: the machine is shared and loaded; every wait polls for a state

FULL_AFTER_LOCK = """
import os, resource, sys, threading, time
from daemon.runs import journal as _journal

_SOFT, _HARD = resource.getrlimit(resource.RLIMIT_FSIZE)
_update = _journal.RunJournal.update
_armed = [True]

def _space_back():
    while not os.path.exists({flag!r}):
        time.sleep(0.05)
    resource.setrlimit(resource.RLIMIT_FSIZE, (_SOFT, _HARD))
    print("FAULT: space is back", file=sys.stderr, flush=True)

def _update_on_full_disk(self, run_id, *, now, state=None, **fields):
    if state == "registering" and _armed[0]:
        _armed[0] = False
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, _HARD))  # the disk is full from now on
        print("FAULT: disk full", file=sys.stderr, flush=True)
        threading.Thread(target=_space_back, daemon=True).start()
    return _update(self, run_id, now=now, state=state, **fields)

_journal.RunJournal.update = _update_on_full_disk
"""


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_test_processes(tmp_path)


class _Lines:
    """The service's stderr, read by a thread into a list (JSON log lines and FAULT markers)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for ln in list(self.lines):
            if ln.startswith("{"):
                try:
                    ev = json.loads(ln)
                except ValueError:
                    continue
                if ev.get("event") == name:
                    out.append(ev)
        return out

    def tail(self) -> str:
        return "\n".join(self.lines[-40:])


@pytest.mark.timeout(900)  # two real runs on a loaded machine; the waits inside poll for states
def test_disk_full_after_lock_releases_it_and_the_config_trains_again(tmp_path: Path) -> None:
    db = tmp_path / "games.db"
    write_games(db, KEY, 60, seed=1)
    flag = tmp_path / "space-is-back"
    data = node_mapping(tmp_path, db, [KEY], triggers={"min_interval": 0})
    settings = settings_of(data)
    cfg = write_config(tmp_path, data)
    code = textwrap.dedent(FULL_AFTER_LOCK).format(flag=str(flag))
    code += f"\nfrom daemon.cli import main\nraise SystemExit(main({['run', '--config', str(cfg)]!r}))\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_environ(),
        cwd=REPO,
    )
    out = _Lines(proc)
    try:
        wait_until(lambda: "FAULT: disk full" in out.lines, BOUND, 0.1, "the run to reach registering")
        # The run fails and says so; its lock is free again (before: held until a restart).
        wait_until(
            lambda: out.events("run.failed") or proc.poll() is not None,
            BOUND,
            0.1,
            f"the failed run to be logged (run.failed); log tail:\n{out.tail()}",
        )
        assert proc.poll() is None, f"service exited: {out.tail()}"
        failed = out.events("run.failed")[0]
        # SQLite reports EFBIG as "disk I/O error" (ENOSPC as "database or disk is full").
        assert "OperationalError" in failed["message"], failed
        steps = {e["step"] for e in out.events("run.cleanup_failed")}
        assert {"journal", "health"} <= steps, (steps, out.tail())
        path = lock_path(settings.lock_dir, f"{TRAINING_PURPOSE}:{KEY}")
        assert not inspect_lock_file(path)["held"], "the config lock leaked after the disk-full failure"

        flag.touch()  # space is back: the same service trains the config again
        wait_until(lambda: "FAULT: space is back" in out.lines, BOUND, 0.1, "the limit to be lifted")
        wait_until(
            lambda: registry_rows(settings), BOUND, 0.2, f"a model after space came back:\n{out.tail()}"
        )
        wait_until(
            lambda: [r["state"] for r in journal_runs(settings)][:1] == ["failed"],
            BOUND,
            0.2,
            "the failed run's final state to reach the journal once space was back",
        )
        assert out.events("run.recorded_late"), out.tail()
        assert out.events("run.succeeded"), out.tail()
    finally:
        stop_service(proc)
    assert proc.returncode == 0, out.tail()
    states = [r["state"] for r in journal_runs(settings)]
    assert states[0] == "failed" and "succeeded" in states, states
    assert not any(s in ("pending", "exporting", "training", "registering") for s in states), states
    assert_registry_matches_journal(settings)
    assert_no_torn_files(settings)
    assert_no_orphans(tmp_path, settings)
