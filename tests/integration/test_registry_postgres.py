"""The PostgreSQL record store on a real server: fencing where the write lands under real concurrent
processes, the write locks (per config, and GC's exclusive one), and a server that is down at
open or goes down mid-operation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from daemon.registry import ModelRegistry, RegistryError, StoreOptions
from daemon.registry.backend import redact_url
from tests.support.postgres_server import PostgresServer
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]

FENCED_WRITER = r"""
import json, os, sys, time
from pathlib import Path
from daemon.registry import FencingTokenRejected, ModelRegistry
reg_dir, url, w, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
work, go = Path(sys.argv[5]), Path(sys.argv[6])
out = []
with ModelRegistry(reg_dir, url=url) as reg:
    while not go.exists():
        time.sleep(0.002)
    for i in range(n):
        # Writers 0-2: tokens interleaved, as a lock that changes hands; writer 3: an operator's
        # manual registrations (no token), which only the config's row lock keeps in order.
        token = 3 * i + w + 1 if w < 3 else None
        f = work / f"w{w}-{i}.pt"
        f.write_bytes(os.urandom(2048))
        try:
            mid = reg.register(f, "square8", 2, fencing_token=token, run_id=f"w{w}-{i}")
        except FencingTokenRejected as e:
            out.append(["rejected", token, e.highest])
            continue
        out.append(["registered", token, mid])
        try:
            reg.promote(mid, fencing_token=token)
            out.append(["promoted", token, mid])
        except FencingTokenRejected as e:
            out.append(["promote_rejected", token, e.highest])
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_concurrent_processes_fenced_registrations(tmp_path: Path, postgres_url: str) -> None:
    reg_dir, work, go = tmp_path / "reg", tmp_path / "work", tmp_path / "go"
    work.mkdir()
    with ModelRegistry(reg_dir, url=postgres_url):
        pass
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                FENCED_WRITER,
                str(reg_dir),
                postgres_url,
                str(w),
                "15",
                str(work),
                str(go),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=tmp_path,
        )
        for w in range(4)
    ]
    go.touch()
    outcomes: list[list[object]] = []
    for p in procs:
        out, err = p.communicate(timeout=110)
        assert p.returncode == 0, err
        outcomes += json.loads(out.strip().splitlines()[-1])
    registered = {str(o[2]): o[1] for o in outcomes if o[0] == "registered"}
    rejected = [int(str(o[1])) for o in outcomes if o[0] == "rejected"]
    promoted = [o for o in outcomes if o[0] == "promoted"]
    assert len(registered) + len(rejected) == 60 and sum(t is None for t in registered.values()) == 15
    with ModelRegistry(reg_dir, url=postgres_url) as reg:
        models = reg.list_models(config="square8_2p")
        # Versions contiguous and unique; every accepted registration has its row, no other.
        assert [m.version for m in models] == list(range(1, len(registered) + 1))
        assert {m.model_id: m.fencing_token for m in models} == registered
        tokens = [m.fencing_token for m in models if m.fencing_token is not None]  # commit order
        assert tokens == sorted(tokens), "a token went backwards"
        assert not set(rejected) & set(tokens)  # a refused write left no row
        assert all(t < max(tokens) for t in rejected)
        assert reg.highest_token("square8_2p") == max(tokens)
        # Stage changes: only accepted promotions, and their tokens never go backwards either.
        history = reg.get_history(config="square8_2p")
        to_prod = [e for e in history if e.to_stage == "production"]
        assert len(to_prod) == len(promoted)
        event_tokens = [e.fencing_token for e in history if e.fencing_token is not None]
        assert event_tokens == sorted(event_tokens)
        prod = reg.get_production("square8_2p")
        assert prod is not None and prod.model_id == to_prod[-1].model_id
        assert len(reg.list_models(stage="production")) == 1


def _waiting_on_lock(url: str, n: int, deadline: float = 30.0) -> None:
    """Poll until ``n`` registry sessions wait for a lock (the state, not a sleep)."""
    end = time.monotonic() + deadline
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < end:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ringrift-daemon' "
                "AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] >= n:
                return
            time.sleep(0.01)
    raise AssertionError(f"never saw {n} sessions waiting on a lock")


def test_write_locks_per_config_and_for_gc(tmp_path: Path, postgres_url: str) -> None:
    reg = ModelRegistry(tmp_path / "r", url=postgres_url, options=StoreOptions(pool_size=6))
    reg.open()
    records = reg._records
    entered: list[str] = []
    release_a = threading.Event()

    def writer(name: str, config: str | None, hold: threading.Event | None = None) -> None:
        with records.write(config):
            entered.append(name)
            if hold is not None:
                assert hold.wait(timeout=60)

    try:
        for config in ("square8_2p", "hex8_3p"):  # committed fence rows: only FOR UPDATE can block
            with records.write(config):
                pass
        a = threading.Thread(target=writer, args=("a", "square8_2p", release_a))
        a.start()
        while "a" not in entered:
            time.sleep(0.005)
        b = threading.Thread(target=writer, args=("b", "square8_2p"))
        b.start()
        _waiting_on_lock(postgres_url, 1)  # same config: waits for a's row lock
        c = threading.Thread(target=writer, args=("c", "hex8_3p"))
        c.start()
        c.join(timeout=30)  # another config is not blocked
        assert entered == ["a", "c"]
        gc = threading.Thread(target=writer, args=("gc", None))
        gc.start()
        _waiting_on_lock(postgres_url, 2)  # GC waits for every writer
        assert entered == ["a", "c"]
        release_a.set()
        for t in (a, b, gc):
            t.join(timeout=30)
        assert entered == ["a", "c", "b", "gc"]
    finally:
        release_a.set()
        reg.close()


def test_down_at_open_names_the_server(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://ringrift:s3cret@127.0.0.1:{port}/registry"
    reg = ModelRegistry(tmp_path / "r", url=url, options=StoreOptions(connect_timeout=2))
    with pytest.raises(RegistryError) as ei:
        reg.open()
    msg = str(ei.value)
    assert f"registry database postgresql://ringrift@127.0.0.1:{port}/registry" in msg
    assert "refused" in msg.lower() and "s3cret" not in msg
    assert redact_url(url) == f"postgresql://ringrift@127.0.0.1:{port}/registry"


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_down_mid_operation_then_recovers(tmp_path: Path, own_server: PostgresServer) -> None:
    url = own_server.create_database("reg")
    model = tmp_path / "m.pt"
    model.write_bytes(os.urandom(5000))

    def hook(point: str) -> None:
        if point == "published" and armed:
            own_server.stop_immediate()  # the server dies between object publication and commit

    armed = False
    reg = ModelRegistry(tmp_path / "r", url=url, options=StoreOptions(connect_timeout=1), hook=hook)
    reg.open()
    try:
        assert reg.register(model, "square8", 2, fencing_token=1) == "square8_2p-v1"
        armed = True
        other = tmp_path / "other.pt"
        other.write_bytes(os.urandom(5000))
        with pytest.raises(
            RegistryError, match=f"registry database postgresql://ringrift@127.0.0.1:{own_server.port}/reg"
        ):
            reg.register(other, "square8", 2, fencing_token=2)
        armed = False
        with pytest.raises(RegistryError, match="unreachable"):
            reg.list_models()
        own_server.start()  # same port, same data: the pool reconnects, no restart needed
        assert [m.model_id for m in reg.list_models()] == ["square8_2p-v1"]
        assert reg.highest_token("square8_2p") == 1  # the interrupted write committed nothing
        # Its object was published but no row names it: GC collects it after the grace.
        report = reg.collect_garbage(now=datetime.now(UTC) + timedelta(hours=2))
        assert [Path(p).name for p in report.orphans_removed] == [f"{_sha(other)}.pt"]
        assert reg.register(other, "square8", 2, fencing_token=2) == "square8_2p-v2"
        # A restart while idle: the pooled connection is dead; the first call still succeeds.
        own_server.stop_immediate()
        own_server.start()
        assert [m.model_id for m in reg.list_models()] == ["square8_2p-v1", "square8_2p-v2"]
    finally:
        reg.close()


def _sha(p: Path) -> str:
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()
