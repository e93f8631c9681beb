"""File (flock) backend across real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from daemon.locks import DistributedLock, list_locks
from daemon.locks.backends.file import inspect_lock_file
from tests.integration.test_locks_redis import NAME, read_event, reap, run_contention, spawn


def test_file_contention_8_processes(tmp_path: Path) -> None:
    run_contention(tmp_path, None, "file")


def test_file_holder_kill9_frees_at_once(tmp_path: Path) -> None:
    lock_dir = tmp_path / "locks"
    holder = spawn("hold", lock_dir, backend="file")
    try:
        first = read_event(holder)
        assert first["acquired"]
        probe = DistributedLock(NAME, backend="file", lock_dir=lock_dir)
        assert not probe.acquire(timeout=0)
        [row] = list_locks(lock_dir)
        assert row["token"] == first["token"] and row["holder"].endswith(f":{holder.pid}")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        assert probe.acquire(timeout=0)  # the kernel dropped the flock with the process
        assert (probe.fencing_token or 0) > first["token"]
        probe.close()
        path = lock_dir / "training_square8_2p.lock"
        assert path.exists() and not inspect_lock_file(path)["held"]  # never unlinked
        assert list_locks(lock_dir) == []
    finally:
        reap(holder)


async def test_file_async_acquire_does_not_block_loop(tmp_path: Path) -> None:
    holder = DistributedLock(NAME, backend="file", lock_dir=tmp_path)
    assert holder.acquire(timeout=0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    t = asyncio.create_task(ticker())
    waiter = DistributedLock(NAME, backend="file", lock_dir=tmp_path, retry_interval=0.01)
    start = time.monotonic()
    assert not await waiter.acquire_async(timeout=0.3)
    assert time.monotonic() - start >= 0.3 and ticks >= 5
    holder.release()
    async with waiter:
        assert waiter.backend == "file" and waiter.fencing_token == (holder.fencing_token or 0) + 1
    t.cancel()
    await asyncio.gather(t, return_exceptions=True)
    holder.close()
