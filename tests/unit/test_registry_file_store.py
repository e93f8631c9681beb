"""The file object store as a shared mount would see it: no file locks, temp files swept by age,
several writers into one directory, and a writer that stalls past the temp grace fails cleanly."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.registry import ModelRegistry, ObjectDamaged, RegistryError
from daemon.registry.stores.file import TMP_PREFIX, FileObjectStore


def _file(tmp: Path, name: str, data: bytes) -> Path:
    p = tmp / "src" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(data)
    return p


def test_temp_files_are_swept_by_age_only(tmp_path: Path) -> None:
    store = FileObjectStore(str(tmp_path / "objects"))
    store.open()
    src = _file(tmp_path, "a.pt", b"a" * 1000)
    store.publish(store.stage(src))
    staged = store.stage(src)  # the same bytes again: its temp copy waits for publish()
    assert staged.path is not None and staged.path.name.startswith(TMP_PREFIX)
    assert f"-{socket.gethostname()}-{os.getpid()}-" in staged.path.name  # unique across nodes
    old = store.dir / f"{TMP_PREFIX}otherhost-42-dead.pt"
    old.write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert store.sweep_temp(time.time() - 600) == [str(old)]  # the live writer's file stays
    assert staged.path.exists() and not old.exists()
    assert store.publish(staged) is False and staged.path is None
    assert [p.name for p in store.dir.iterdir()] == [f"{hashlib.sha256(b'a' * 1000).hexdigest()}.pt"]


def test_several_writers_one_directory(tmp_path: Path) -> None:
    """Threads standing in for nodes: same and different bytes, a sweeper running alongside."""
    stores = [FileObjectStore(str(tmp_path / "mount")) for _ in range(4)]
    for s in stores:
        s.open()
    payloads = [os.urandom(200_000) for _ in range(3)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(i: int) -> None:
        try:
            for j in range(10):
                data = payloads[(i + j) % 3]
                staged = stores[i].stage(_file(tmp_path, f"w{i}-{j}.pt", data))
                stores[i].publish(staged)  # same digest from several writers: rename over itself
                stores[i].release(staged)
        except BaseException as e:
            errors.append(e)

    def sweeper() -> None:
        while not stop.is_set():
            stores[0].sweep_temp(time.time() - 3600)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    sweep = threading.Thread(target=sweeper)
    sweep.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    sweep.join(timeout=10)
    assert errors == []
    digests = sorted(hashlib.sha256(p).hexdigest() for p in payloads)
    assert sorted(d for d, _ in stores[0].objects()) == digests
    assert sorted(p.name for p in stores[0].dir.iterdir()) == [f"{d}.pt" for d in digests]
    for d, p in zip(sorted(payloads, key=lambda b: hashlib.sha256(b).hexdigest()), digests, strict=True):
        assert stores[1].check(p, len(d)) is None


def test_writer_stalled_past_the_gc_grace_registers_nothing(tmp_path: Path) -> None:
    other = ModelRegistry(tmp_path / "reg")

    def hook(point: str) -> None:
        if point == "copied":  # another node's GC runs while this writer is stalled for hours
            with other:
                assert (
                    len(other.collect_garbage(now=datetime.now(UTC) + timedelta(hours=2)).orphans_removed)
                    == 1
                )

    with ModelRegistry(tmp_path / "reg", hook=hook) as reg:
        with pytest.raises(RegistryError, match="vanished before its row was committed"):
            reg.register(_file(tmp_path, "a.pt", b"x" * 500), "square8", 2, fencing_token=1)
        assert reg.list_models() == [] and list(reg.objects_dir.iterdir()) == []
        assert reg.highest_token("square8_2p") == 0


def test_dedup_onto_an_orphan_that_gc_collects_stores_it_again(tmp_path: Path) -> None:
    data = os.urandom(700)
    store = FileObjectStore(str(tmp_path / "reg" / "objects"))
    store.open()
    store.publish(store.stage(_file(tmp_path, "orphan.pt", data)))  # stored, no row: an orphan
    other = ModelRegistry(tmp_path / "reg")

    def hook(point: str) -> None:
        if point == "copied":  # deduplicated onto the orphan (temp copy kept), then GC takes it
            with other:
                assert len(other.collect_garbage(grace_seconds=0).orphans_removed) == 1

    with ModelRegistry(tmp_path / "reg", hook=hook) as reg:
        mid = reg.register(_file(tmp_path, "a.pt", data), "square8", 2)
        assert reg.fetch(mid, tmp_path / "out.pt").size == 700
        assert sorted(p.name for p in reg.objects_dir.iterdir()) == [f"{hashlib.sha256(data).hexdigest()}.pt"]


def test_fetch_is_atomic_and_verified(tmp_path: Path) -> None:
    store = FileObjectStore(str(tmp_path / "objects"))
    store.open()
    data = os.urandom(3 * (8 << 20) + 123)  # several chunks
    staged = store.stage(_file(tmp_path, "big.pt", data))
    store.publish(staged)
    dest = tmp_path / "new" / "dir" / "model.pt"
    store.fetch(staged.digest, staged.size, dest)
    assert dest.read_bytes() == data
    with pytest.raises(ObjectDamaged, match="size_mismatch"):
        store.fetch(staged.digest, staged.size - 1, dest)  # a longer object than recorded
    obj = store.path_for(staged.digest)
    obj.write_bytes(data[:-1] + bytes([data[-1] ^ 0x80]))  # the last chunk altered, same size
    with pytest.raises(ObjectDamaged, match="digest_mismatch"):
        store.fetch(staged.digest, staged.size, dest)
    obj.unlink()
    with pytest.raises(ObjectDamaged, match="missing"):
        store.fetch(staged.digest, staged.size, dest)
    assert dest.read_bytes() == data and sorted(p.name for p in dest.parent.iterdir()) == ["model.pt"]


def test_a_dead_local_writers_temp_file_goes_at_once(tmp_path: Path) -> None:
    # kill -9 mid-copy: on restart the file must not wait the whole grace (an hour).
    store = FileObjectStore(str(tmp_path / "objects"))
    store.open()
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(proc.stdout)  # exited: no process has this pid now (reuse aside)
    host = socket.gethostname()
    dead = store.dir / f"{TMP_PREFIX}{host}-{dead_pid}-abc.pt"
    live = store.dir / f"{TMP_PREFIX}{host}-{os.getppid()}-def.pt"  # a live process of this host
    remote = store.dir / f"{TMP_PREFIX}otherhost-{dead_pid}-ghi.pt"  # maybe alive over there
    for p in (dead, live, remote):
        p.write_bytes(b"partial")
    assert store.sweep_temp(time.time() - 3600) == [str(dead)]
    assert live.exists() and remote.exists()
