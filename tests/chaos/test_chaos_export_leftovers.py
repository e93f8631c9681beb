"""Export helpers die with the service (issue 17 item 12).

``kill -9`` of a real service while its parallel export runs (``export.workers: 2``): the
forkserver, its workers and multiprocessing's resource tracker must all be gone within a
bounded wait (parent-death signals; the tracker sees its pipe close). A helper of a previous
service of the same data directory that still runs (here: one made to look like it, carrying
that directory's instance token) is killed by the next start; one of another data directory
is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.selfplay_sim import write_games
from daemon.service.leftovers import INSTANCE_ENV, instance_token
from tests.chaos._helpers import (
    kill_test_processes,
    node_mapping,
    pid_alive,
    run_cli,
    settings_of,
    start_service,
    stop_process,
    wait_until,
    write_config,
)

KEY = "square8_2p"
BOUND = 240.0
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_test_processes(tmp_path)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live (non-zombie) process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            out[int(name)] = int(fields[1])
    return out


def _children(pid: int, parents: dict[int, int] | None = None) -> list[int]:
    return [p for p, pp in (parents if parents is not None else _parents()).items() if pp == pid]


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_kill_9_during_parallel_export_leaves_no_helper(tmp_path: Path) -> None:
    db = tmp_path / "games.db"
    write_games(db, KEY, 8000, seed=1)  # enough worker tasks for the export to take a while
    data = node_mapping(tmp_path, db, [KEY], export={"workers": 2})
    proc = start_service(write_config(tmp_path, data), tmp_path / "service.log")
    helpers: dict[int, str] = {}
    _direct: set[int] = set()  # the service's own children
    try:

        def exporting() -> bool:
            # The forkserver and the tracker are the service's children; workers the forkserver's.
            assert proc.poll() is None, f"service exited (rc {proc.returncode})"
            parents = _parents()
            for child in _children(proc.pid, parents):
                _direct.add(child)
                if "multiprocessing" not in helpers.get(child, ""):  # seen before its exec: read again
                    helpers[child] = _cmd(child)
                if "forkserver" in helpers[child] and _children(child, parents):
                    return True
            return False

        wait_until(exporting, BOUND, 0.001, "the parallel export's forkserver and workers")
        # Freeze the service so its workers stay (they wait for tasks), then look and kill.
        stop_process(proc.pid)
        for child in list(helpers):
            for worker in _children(child):
                helpers[worker] = ""

        def named() -> bool:
            # A child seen between its fork and its exec shows no command line, or the service's.
            helpers.update({p: _cmd(p) for p in helpers})
            return all(c and (p not in _direct or " daemon run " not in c) for p, c in helpers.items())

        wait_until(named, BOUND, 0.05, f"the helpers' command lines: {helpers}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    servers = [p for p, c in helpers.items() if "forkserver" in c and p in _direct]
    trackers = [p for p, c in helpers.items() if "resource_tracker" in c]
    workers = [p for p in helpers if p not in _direct]  # forks of the forkserver: same argv
    assert len(servers) == 1 and len(trackers) == 1 and workers, helpers

    def gone() -> bool:
        return not [p for p in helpers if pid_alive(p)]

    wait_until(
        gone, BOUND, 0.2, f"export helpers to end: {[(p, helpers[p]) for p in helpers if pid_alive(p)]}"
    )


def test_start_reaps_helpers_left_by_a_previous_service(tmp_path: Path) -> None:
    db = tmp_path / "games.db"
    write_games(db, KEY, 10, seed=1)  # below the bootstrap minimum: nothing trains
    data = node_mapping(tmp_path, db, [KEY])
    settings = settings_of(data)
    mine = {**os.environ, INSTANCE_ENV: instance_token(settings.state_dir)}
    other = {**os.environ, INSTANCE_ENV: instance_token(tmp_path / "elsewhere" / "state")}
    sleeper = [sys.executable, "-c", "import time; time.sleep(3600)", str(tmp_path)]
    left = subprocess.Popen(sleeper, env=mine)
    left.send_signal(signal.SIGSTOP)  # a stopped helper cannot act on a parent-death signal
    foreign = subprocess.Popen(sleeper, env=other)
    try:
        out = run_cli(["run", "--config", str(write_config(tmp_path, data)), "--once"], timeout=BOUND)
        assert out.returncode == 0, out.stderr[-2000:]
        assert left.wait(timeout=BOUND) == -signal.SIGKILL
        assert f"{left.pid}" in out.stderr and "recovery.leftovers_ended" in out.stderr
        assert foreign.poll() is None, "a process of another data directory was killed"
    finally:
        for p in (left, foreign):
            if p.poll() is None:
                p.kill()
                p.wait()
