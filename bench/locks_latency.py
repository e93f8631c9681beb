"""Lock latency and failover benchmark: ``python -m bench.locks_latency`` prints one JSON object.

Same run, same loopback redis-server (started here, killed by PID):
* acquire+release of ``DistributedLock`` vs a bare ``SET NX PX`` + ``DEL``, p50/p99,
  one client and 8 concurrent client processes (distinct names: load, not contention),
  in alternating blocks within each client so both sides see the same load;
* failover after ``kill -9`` of a holder, as a multiple of the TTL.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from daemon.locks import DistributedLock
from daemon.logs import configure_logging
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 10  # bare and lock blocks alternate, so machine load hits both alike


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e6


def _production_logging() -> None:
    """The service's own logging set-up (JSON at INFO), written to /dev/null."""
    configure_logging("INFO", json=True, stream=open(os.devnull, "w"))  # noqa: SIM115


def _bare(client: redis.Redis, key: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        client.set(key, "x", nx=True, px=60000)
        client.delete(key)
        out.append(time.perf_counter() - t)
    return out


def _lock(lock: DistributedLock, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        if not lock.acquire(timeout=0):
            raise RuntimeError("uncontended acquire failed")
        lock.release()
        out.append(time.perf_counter() - t)
    return out


def _interleaved(
    url: str, name: str, lock_dir: str, n: int, rounds: int = ROUNDS
) -> tuple[list[float], list[float]]:
    """``n`` bare cycles and ``n`` lock cycles in alternating blocks, so both see the same load."""
    client = redis.Redis.from_url(url)
    lock = DistributedLock(name, backend="redis", redis_url=url, lock_dir=lock_dir, ttl=30.0)
    bare: list[float] = []
    locked: list[float] = []
    try:
        for _ in range(rounds):
            bare += _bare(client, name + ":bare", max(1, n // rounds))
            locked += _lock(lock, max(1, n // rounds))
    finally:
        lock.close()
        client.close()
    return bare, locked


def _child(url: str, idx: int, lock_dir: str, n: int, q: Any) -> None:
    _production_logging()
    q.put(_interleaved(url, f"bench:c{idx}", lock_dir, n))


def _concurrent(url: str, lock_dir: str, n: int, clients: int) -> tuple[list[float], list[float]]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(url, i, lock_dir, n, q)) for i in range(clients)]
    for p in procs:
        p.start()
    bare: list[float] = []
    locked: list[float] = []
    for _ in procs:
        b, lk = q.get(timeout=300)
        bare += b
        locked += lk
    for p in procs:
        p.join(timeout=30)
    return bare, locked


def _failover(url: str, lock_dir: Path, ttl: float) -> float:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.test_locks_worker",
            "hold",
            "--lock-dir",
            str(lock_dir),
            "--backend",
            "redis",
            "--url",
            url,
            "--ttl",
            str(ttl),
            "--name",
            "bench:failover",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert json.loads(holder.stdout.readline())["acquired"]
        lock = DistributedLock(
            "bench:failover", backend="redis", redis_url=url, lock_dir=lock_dir, ttl=ttl, retry_interval=0.01
        )
        os.kill(holder.pid, signal.SIGKILL)
        t = time.monotonic()
        try:
            assert lock.acquire(timeout=10 * ttl)
            return (time.monotonic() - t) / ttl
        finally:
            lock.close()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--ttl", type=float, default=1.0)
    ap.add_argument("--failovers", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            url, lock_dir = server.url, str(Path(tmp) / "locks")
            _production_logging()
            _interleaved(url, "bench:warm", lock_dir, 200, rounds=1)
            bare1, lock1 = _interleaved(url, "bench:s", lock_dir, args.n)
            bare8, lock8 = _concurrent(url, lock_dir, args.n // 4, args.clients)
            fo = [_failover(url, Path(lock_dir), args.ttl) for _ in range(args.failovers)]
        finally:
            server.stop()
    res: dict[str, Any] = {
        "benchmark": "locks_latency",
        "n": args.n,
        "clients": args.clients,
        "ttl": args.ttl,
    }
    for label, lk, bare in (("single", lock1, bare1), ("concurrent", lock8, bare8)):
        res[label] = {
            "lock_p50_us": round(_pct(lk, 0.5), 1),
            "lock_p99_us": round(_pct(lk, 0.99), 1),
            "bare_p50_us": round(_pct(bare, 0.5), 1),
            "bare_p99_us": round(_pct(bare, 0.99), 1),
            "ratio_p50": round(_pct(lk, 0.5) / _pct(bare, 0.5), 2),
            "ratio_p99": round(_pct(lk, 0.99) / _pct(bare, 0.99), 2),
        }
    res["failover_ttl_multiple"] = {
        "median": round(statistics.median(fo), 3),
        "max": round(max(fo), 3),
        "runs": [round(x, 3) for x in fo],
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
