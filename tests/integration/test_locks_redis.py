"""Redis lease backend against a real redis-server and real processes."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.locks import DistributedLock, LockBackendUnavailable, LockNotAcquired, list_locks, select_backend
from tests.support.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
NAME = "training:square8_2p"


def spawn(
    mode: str, lock_dir: Path, *extra: str, url: str | None = None, backend: str = "redis"
) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        "-m",
        "tests.integration.test_locks_worker",
        mode,
        "--lock-dir",
        str(lock_dir),
        "--backend",
        backend,
        *extra,
    ]
    if url:
        args += ["--url", url]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def read_event(proc: subprocess.Popen[str], timeout: float = 20.0) -> dict[str, Any]:
    """Next JSON line from a worker's stdout (bounded by a deadline via a reader thread)."""
    box: list[str] = []
    t = threading.Thread(
        target=lambda: box.append(proc.stdout.readline() if proc.stdout else ""), daemon=True
    )
    t.start()
    t.join(timeout)
    assert box and box[0], f"worker {proc.pid} printed nothing within {timeout}s"
    return dict(json.loads(box[0]))


def reap(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            p.kill()
        p.wait(timeout=10)
        if p.stdout:
            p.stdout.close()


def check_log(log: Path, expected: int) -> list[int]:
    rows = []
    for line in log.read_text().splitlines():
        assert not line.startswith("LOST"), line
        token, start, end, _pid = line.split()
        rows.append((float(start), float(end), int(token)))
    assert len(rows) == expected
    rows.sort()
    for (_s0, e0, t0), (s1, _e1, t1) in itertools.pairwise(rows):
        assert s1 >= e0, "two holders overlapped"
        assert t1 > t0, "fencing tokens not strictly increasing in hold order"
    return [t for _s, _e, t in rows]


def run_contention(tmp_path: Path, url: str | None, backend: str, procs: int = 8, cycles: int = 200) -> None:
    log = tmp_path / "holds.log"
    workers = [
        spawn(
            "cycles",
            tmp_path / "locks",
            "--n",
            str(cycles),
            "--log",
            str(log),
            "--ttl",
            "5",
            url=url,
            backend=backend,
        )
        for _ in range(procs)
    ]
    try:
        for w in workers:
            assert w.wait(timeout=90) == 0
    finally:
        reap(*workers)
    check_log(log, procs * cycles)


@pytest.mark.slow
def test_contention_8_processes_no_overlap_tokens_increase(redis_server: RedisServer, tmp_path: Path) -> None:
    run_contention(tmp_path, redis_server.url, "redis")


def test_holder_kill9_other_acquires_within_ttl(redis_server: RedisServer, tmp_path: Path) -> None:
    holder = spawn("hold", tmp_path / "locks", "--ttl", "1.0", url=redis_server.url)
    try:
        first = read_event(holder)
        assert first["acquired"]
        os.kill(holder.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        lock = DistributedLock(
            NAME, ttl=1.0, backend="redis", redis_url=redis_server.url, lock_dir=tmp_path / "l"
        )
        try:
            assert lock.acquire(timeout=10)
            waited = time.monotonic() - killed_at
            assert waited <= 1.0 + 1.0
            assert lock.fencing_token is not None and lock.fencing_token > first["token"]
        finally:
            lock.close()
    finally:
        reap(holder)


def test_reused_sync_lock_keeps_renewing_a_long_hold(redis_server: RedisServer, tmp_path: Path) -> None:
    # The renewer thread is never woken by acquire/release: it must still find
    # the second lease of a reused object and renew it across several TTLs.
    kw = {"backend": "redis", "redis_url": redis_server.url, "lock_dir": tmp_path}
    lock = DistributedLock(NAME, ttl=0.3, **kw)  # type: ignore[arg-type]
    other = DistributedLock(NAME, ttl=0.3, **kw)  # type: ignore[arg-type]
    try:
        assert lock.acquire(timeout=1)
        lock.release()
        assert lock.acquire(timeout=1)
        h = lock._handle
        assert h is not None
        first_ok = h.state.last_ok
        deadline = time.monotonic() + 5
        # Renewed past the first lease's end (several real renewals), or the deadline.
        while h.state.last_ok < first_ok + 0.3 and not lock.lost:
            assert time.monotonic() < deadline, "the reused lock's lease was never renewed"
            time.sleep(0.01)
        assert lock.held and not lock.lost
        assert not other.acquire(timeout=0)
    finally:
        lock.close()
        other.close()


def test_sigstop_holder_loses_lease_and_learns_it(redis_server: RedisServer, tmp_path: Path) -> None:
    holder = spawn("hold", tmp_path / "locks", "--ttl", "1.0", url=redis_server.url)
    try:
        first = read_event(holder)
        os.kill(holder.pid, signal.SIGSTOP)
        lock = DistributedLock(
            NAME, ttl=1.0, backend="redis", redis_url=redis_server.url, lock_dir=tmp_path / "l"
        )
        try:
            assert lock.acquire(timeout=10)  # only possible once the frozen holder's lease ran out
            os.kill(holder.pid, signal.SIGCONT)
            lost = read_event(holder)
            assert lost["token"] == first["token"] < (lock.fencing_token or 0)
            assert "lost" in lost
            assert not lock.lost and lock.held
        finally:
            lock.close()
    finally:
        reap(holder)


def test_redis_killed_while_held_fires_lost_within_ttl(redis_server: RedisServer, tmp_path: Path) -> None:
    fired: list[tuple[float, str]] = []
    lock = DistributedLock(
        NAME,
        ttl=1.0,
        backend="redis",
        redis_url=redis_server.url,
        lock_dir=tmp_path,
        on_lost=lambda r: fired.append((time.monotonic(), r)),
    )
    try:
        assert lock.acquire(timeout=5)
        redis_server.stop()
        killed = time.monotonic()
        assert lock.lost_event.wait(timeout=10)
        assert len(fired) == 1 and lock.lost
        assert fired[0][0] - killed <= 1.0 + 0.5  # TTL plus scheduling slack on a loaded box
        time.sleep(0.3)  # the renewer must not fire again
        assert len(fired) == 1
    finally:
        lock.close()


async def test_async_redis_killed_lost_event(redis_server: RedisServer, tmp_path: Path) -> None:
    calls: list[str] = []
    lock = DistributedLock(
        NAME, ttl=1.0, backend="redis", redis_url=redis_server.url, lock_dir=tmp_path, on_lost=calls.append
    )
    async with lock:
        token = lock.fencing_token
        redis_server.stop()
        await asyncio.wait_for(lock.wait_lost(), timeout=10)
        assert lock.lost and calls and len(calls) == 1 and lock.fencing_token == token


@pytest.mark.parametrize("clock", [True, False])
def test_redis_restart_empty_tokens_keep_rising(
    redis_server: RedisServer, tmp_path: Path, clock: bool
) -> None:
    issued = []
    for _ in range(3):
        with DistributedLock(
            NAME, ttl=2.0, backend="redis", redis_url=redis_server.url, lock_dir=tmp_path, fence_clock=clock
        ) as lock:
            issued.append(lock.fencing_token or 0)
    redis_server.stop()
    redis_server.start()
    with DistributedLock(
        NAME, ttl=2.0, backend="redis", redis_url=redis_server.url, lock_dir=tmp_path, fence_clock=clock
    ) as lock:
        assert (lock.fencing_token or 0) > max(issued)
    assert issued == sorted(set(issued))


def test_restart_empty_rereads_a_ceiling_another_process_raised(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # A caches the node's ceiling (11); B then issues tokens up to 15 and raises it
    # to 21. After an empty restart A must not trust its stale cache: the script
    # refuses it and A re-reads the file, so its token is above all of B's.
    def make() -> DistributedLock:
        return DistributedLock(
            NAME, ttl=2.0, backend="redis", redis_url=redis_server.url, lock_dir=tmp_path,
            fence_clock=False, fence_reserve=10,
        )  # fmt: skip

    a, b = make(), make()
    try:
        assert a.acquire(timeout=1) and a.fencing_token == 1
        a.release()
        issued = []
        for _ in range(14):
            assert b.acquire(timeout=1)
            issued.append(b.fencing_token or 0)
            b.release()
        assert issued[-1] == 15
        redis_server.stop()
        redis_server.start()
        assert a.acquire(timeout=1)
        assert (a.fencing_token or 0) > max(issued)
    finally:
        a.close()
        b.close()


def test_fence_floor_hook_is_respected(redis_server: RedisServer, tmp_path: Path) -> None:
    with DistributedLock(
        NAME,
        backend="redis",
        redis_url=redis_server.url,
        lock_dir=tmp_path,
        fence_clock=False,
        fence_floor=lambda: 10**9,
    ) as lock:
        assert lock.fencing_token == 10**9 + 1


def test_backend_redis_fails_closed_and_auto_falls_back(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    strict = DistributedLock(NAME, backend="redis", redis_url=dead, lock_dir=tmp_path)
    with pytest.raises(LockBackendUnavailable, match="unreachable"):
        strict.acquire(timeout=0)
    sel = select_backend("redis", dead)
    assert not sel.available and sel.backend == "redis"
    auto = DistributedLock(NAME, backend="auto", redis_url=dead, lock_dir=tmp_path)
    try:
        assert auto.acquire(timeout=0) and auto.backend == "file"
        assert select_backend("auto", dead).backend == "file"
    finally:
        auto.close()


def test_lost_holder_release_does_not_delete_new_holder(redis_server: RedisServer, tmp_path: Path) -> None:
    a = DistributedLock(NAME, ttl=0.3, backend="redis", redis_url=redis_server.url, lock_dir=tmp_path)
    b = DistributedLock(NAME, ttl=5.0, backend="redis", redis_url=redis_server.url, lock_dir=tmp_path)
    try:
        assert a.acquire(timeout=1)
        a._handle.mark_released()  # type: ignore[union-attr]  # freeze A's renewer: simulate a pause
        assert b.acquire(timeout=5)
        a.release()  # late, owner-checked: must not delete B's key
        rows = list_locks(tmp_path, redis_server.url)
        assert [r["token"] for r in rows if r["backend"] == "redis"] == [b.fencing_token]
        with (
            pytest.raises(LockNotAcquired),
            DistributedLock(
                NAME, backend="redis", redis_url=redis_server.url, lock_dir=tmp_path, blocking_timeout=0.1
            ),
        ):
            pass
    finally:
        a.close()
        b.close()


async def test_async_tasks_exclude_each_other(redis_server: RedisServer, tmp_path: Path) -> None:
    inside = 0
    peak = 0
    tokens: list[int] = []

    async def worker() -> None:
        nonlocal inside, peak
        for _ in range(10):
            async with DistributedLock(
                NAME,
                ttl=2.0,
                backend="redis",
                redis_url=redis_server.url,
                lock_dir=tmp_path,
                retry_interval=0.002,
            ) as lock:
                inside += 1
                peak = max(peak, inside)
                tokens.append(lock.fencing_token or 0)
                await asyncio.sleep(0)
                inside -= 1

    await asyncio.gather(*(worker() for _ in range(4)))
    assert peak == 1 and tokens == sorted(set(tokens)) and len(tokens) == 40


def test_cli_locks_json(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon.cli.locks import cli_locks
    from daemon.settings import settings_from_mapping

    settings = settings_from_mapping({"data_dir": str(tmp_path), "redis": {"url": redis_server.url}})
    with DistributedLock(
        NAME, backend="redis", redis_url=redis_server.url, lock_dir=settings.lock_dir
    ) as lock:
        assert cli_locks(settings, as_json=True) == 0
        # Unconfigured structlog prints to stdout too: the JSON object is the last line.
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["error"] is None
        [row] = out["locks"]
        assert row["token"] == lock.fencing_token and row["backend"] == "redis" and 0 < row["ttl_left"] <= 60
        assert cli_locks(settings, as_json=False) == 0
        assert NAME in capsys.readouterr().out
