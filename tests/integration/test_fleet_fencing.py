"""Fencing where the write lands, with Redis gone (DESIGN 11).

A holder process takes the config's Redis lease, then is frozen (SIGSTOP) past the lease TTL:
either before it tries to register, or with its model already staged in the shared object
directory (past the registry's early token check). Another node takes the lease with a higher
token, registers and promotes. Redis is then restarted empty, so Redis remembers no token and
the holder's Redis-side check (``ClusterFence``, as the service runs it) passes. Thawed, the
holder tries to register: PostgreSQL refuses it - no row, no object under its digest, no
temp file, no promotion.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from daemon.locks.lock import DistributedLock
from daemon.registry import ModelRegistry
from tests.chaos._helpers import REPO, child_environ, wait_until
from tests.support.redis_server import RedisServer

TTL = 2.0
PREFIX = "fence:"
LOCK = "training:square8_2p"

HOLDER = r"""
import faulthandler, json, os, signal, sys
faulthandler.register(signal.SIGUSR1)  # the test asks for the stacks of a holder that hangs
from pathlib import Path
from daemon.locks.admin import ClusterFence
from daemon.locks.lock import DistributedLock
from daemon.registry import FencingTokenRejected, ModelRegistry
reg_dir, url, store, redis_url, model, stop_at = sys.argv[1:7]
ttl, prefix, name = float(sys.argv[7]), sys.argv[8], sys.argv[9]

def freeze(point):
    if point == stop_at:
        print(json.dumps({"frozen": point}), flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

with ModelRegistry(Path(reg_dir), url=url, store=store, hook=freeze, require_token=True) as reg:
    lock = DistributedLock(name, ttl=ttl, backend="redis", redis_url=redis_url, key_prefix=prefix,
                           fence_floor=lambda: reg.highest_token("square8_2p"))
    assert lock.acquire(timeout=30)
    token = lock.fencing_token
    print(json.dumps({"token": token}), flush=True)
    freeze("before")
    fence = ClusterFence(redis_url, None, prefix, 1.0)
    try:
        mid = reg.register(Path(model), "square8", 2, fencing_token=token, run_id="stale-holder",
                           fence_check=fence)
    except FencingTokenRejected as e:
        out = {"rejected": token, "highest": e.highest}
    else:
        reg.promote(mid, fencing_token=token)
        out = {"registered": mid}
    print(json.dumps(out), flush=True)
    try:
        lock.release()
    except Exception:
        pass
"""

# A lease expiry and a Redis restart.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


class Lines:
    """The holder's own JSON lines (structlog writes its events to stdout too), read by a thread
    so a wait has a bound; on a timeout the holder's stacks go to its stderr (faulthandler)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            if raw.startswith("{") and '"event"' not in raw:
                self.q.put(raw)
        self.q.put(None)

    def next(self, timeout: float = 90.0) -> dict[str, object]:
        try:
            raw = self.q.get(timeout=timeout)
        except queue.Empty:
            os.kill(self.proc.pid, signal.SIGUSR1)
            time.sleep(1.0)  # let faulthandler write the stacks before the kill
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"no line from the holder within {timeout:.0f}s:\n{err[-6000:]}") from None
        assert raw is not None, f"holder exited early: {self.proc.wait(timeout=30)}"
        loaded: dict[str, object] = json.loads(raw)
        return loaded


def _stopped(pid: int) -> bool:
    """Every thread of ``pid`` is stopped (its lease renewal thread too)."""
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            states.append(Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0])
        except OSError:
            continue
    return bool(states) and all(st in ("T", "t") for st in states)


@pytest.mark.parametrize("stop_at", ["before", "copied"])
def test_stale_holder_refused_by_postgres_after_redis_restart(
    tmp_path: Path, redis_server: RedisServer, postgres_url: str, stop_at: str
) -> None:
    store = tmp_path / "objects"
    observer = ModelRegistry(tmp_path / "observer", url=postgres_url, store=str(store))
    observer.open()  # migrations applied once, before either node
    stale_model = tmp_path / "stale.pt"
    stale_model.write_bytes(os.urandom(20_000))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "holder"), postgres_url, str(store),
         redis_server.url, str(stale_model), stop_at, str(TTL), PREFIX, LOCK],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_environ(), cwd=REPO,
    )  # fmt: skip
    lines = Lines(holder)
    try:
        t1 = int(str(lines.next()["token"]))
        assert lines.next() == {"frozen": stop_at}
        # It stops itself (a second SIGSTOP from here could land after the SIGCONT below).
        wait_until(lambda: _stopped(holder.pid), 60, 0.01, "the holder to stop")
        # Another node: its blocking acquire polls until the frozen holder's lease expired.
        other = DistributedLock(
            LOCK, ttl=30, backend="redis", redis_url=redis_server.url, key_prefix=PREFIX,
            fence_floor=lambda: observer.highest_token("square8_2p"),
        )  # fmt: skip
        assert other.acquire(timeout=60 + 10 * TTL), "the frozen holder's lease never expired"
        t2 = other.fencing_token
        assert t2 is not None and t2 > t1
        fresh = tmp_path / "fresh.pt"
        fresh.write_bytes(os.urandom(20_000))
        with ModelRegistry(tmp_path / "other", url=postgres_url, store=str(store), require_token=True) as reg:
            winner = reg.register(fresh, "square8", 2, fencing_token=t2, run_id="new-holder")
            reg.promote(winner, fencing_token=t2)
        other.release()
        redis_server.stop()  # Redis forgets every lease and token
        redis_server.start()
        os.kill(holder.pid, signal.SIGCONT)
        outcome = lines.next()
        assert holder.wait(timeout=60) == 0, holder.stderr.read() if holder.stderr else ""
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
            holder.wait(timeout=30)
    try:
        assert outcome == {"rejected": t1, "highest": t2}, outcome
        models = observer.list_models(config="square8_2p")
        assert [(m.model_id, m.run_id, m.fencing_token) for m in models] == [(winner, "new-holder", t2)]
        assert observer.get_production("square8_2p").model_id == winner  # type: ignore[union-attr]
        assert observer.highest_token("square8_2p") == t2
        assert all(e.fencing_token == t2 for e in observer.get_history(config="square8_2p"))
        # No object under the stale model's digest, and no temp file of its staged copy.
        assert sorted(p.name for p in (store / "sha256").iterdir()) == [f"{models[0].sha256}.pt"]
        assert observer.verify() == []
    finally:
        observer.close()
