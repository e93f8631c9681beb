"""Subprocess worker for the lock tests (no tests here): ``python -m tests.integration.test_locks_worker``.

Modes:
  cycles NAME N LOG   acquire/hold/release N times, appending "token start end pid" per hold
  hold NAME           acquire, print {"token": ...}, then print {"lost": reason, ...} if the lease is lost
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import structlog

from daemon.locks import DistributedLock


def _lock(args: argparse.Namespace, **kw: object) -> DistributedLock:
    return DistributedLock(
        args.name,
        ttl=args.ttl,
        backend=args.backend,
        redis_url=args.url,
        lock_dir=args.lock_dir,
        retry_interval=args.retry,
        fence_clock=not args.no_clock,
        **kw,  # type: ignore[arg-type]
    )


def cycles(args: argparse.Namespace) -> int:
    lock = _lock(args)
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for _ in range(args.n):
            if not lock.acquire(timeout=None):
                return 3
            start = time.monotonic()
            if args.hold > 0:
                time.sleep(args.hold)
            end = time.monotonic()
            os.write(fd, f"{lock.fencing_token} {start:.9f} {end:.9f} {os.getpid()}\n".encode())
            if lock.lost:
                os.write(fd, f"LOST {lock.fencing_token}\n".encode())
            lock.release()
    finally:
        os.close(fd)
        lock.close()
    return 0


def hold(args: argparse.Namespace) -> int:
    done = threading.Event()

    def on_lost(reason: str) -> None:
        print(json.dumps({"lost": reason, "token": lock.fencing_token, "pid": os.getpid()}), flush=True)
        done.set()

    lock = _lock(args, on_lost=on_lost)
    if not lock.acquire(timeout=args.timeout):
        print(json.dumps({"acquired": False}), flush=True)
        return 3
    print(json.dumps({"acquired": True, "token": lock.fencing_token, "pid": os.getpid()}), flush=True)
    done.wait(args.max_hold)
    lock.close()
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["cycles", "hold"])
    p.add_argument("--name", default="training:square8_2p")
    p.add_argument("--backend", default="redis")
    p.add_argument("--url", default=None)
    p.add_argument("--lock-dir", required=True)
    p.add_argument("--ttl", type=float, default=1.0)
    p.add_argument("--retry", type=float, default=0.002)
    p.add_argument("--no-clock", action="store_true")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--log", default=None)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--max-hold", type=float, default=60.0)
    args = p.parse_args()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    return cycles(args) if args.mode == "cycles" else hold(args)


if __name__ == "__main__":
    sys.exit(main())
