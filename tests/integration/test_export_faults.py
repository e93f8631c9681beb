"""Faults during export: disk full, killed mid-write, corrupt source, no room.

Each time the previous NPZ must be byte-identical afterwards and the cache not
updated. Disk full and kills run the export in a real child process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.export.cache import ExportCache
from daemon.export.job import ExportError, run_export
from daemon.selfplay_sim import write_games
from daemon.settings import Settings, settings_from_mapping

ROOT = Path(__file__).resolve().parents[2]
KEY = "square8_2p"

CHILD = r"""
import json, resource, signal, sys, time
from daemon.export import job
from daemon.npz import writer
from daemon.settings import settings_from_mapping

cfg = json.loads(sys.argv[1])
settings = settings_from_mapping(cfg["settings"])
progress = None
if cfg["mode"] == "fsize":
    # Ignore SIGXFSZ so that writing past the limit fails with EFBIG, like a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["limit"], cfg["limit"]))
elif cfg["mode"] == "kill_in_parts":
    def progress(done, total):
        print("WRITING", flush=True)
        time.sleep(60)
elif cfg["mode"] == "kill_in_zip":
    def slow_copy(src, dst, length=0):
        dst.write(src.read(1 << 16))
        print("WRITING", flush=True)
        time.sleep(60)
    writer.shutil.copyfileobj = slow_copy
    def slow_exact(src, dst, size, what):  # the copy of adopted segments (incremental export)
        slow_copy(src, dst)
    writer._copy_exactly = slow_exact
try:
    job.run_export(settings, cfg["key"], progress=progress)
except job.ExportError as e:
    print("FAILED", e, flush=True)
    sys.exit(1)
print("OK", flush=True)
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Settings, Path, Path, bytes, bytes]:
    db = tmp_path / "games.db"
    write_games(db, KEY, 80, seed=2)
    s = settings_from_mapping(
        {"data_dir": str(tmp_path / "data"), "game_dbs": [str(db)], "export": {"min_free_bytes": 0}}
    )
    out = run_export(s, KEY).output
    cache = s.training_dir / ".export_cache.json"
    write_games(db, KEY, 80, seed=3)  # new games: the next export is a real one
    return s, db, out, out.read_bytes(), cache.read_bytes()


def child(s: Settings, mode: str, **extra: object) -> subprocess.Popen[str]:
    # Secrets are never read from a mapping; these settings have none to pass on.
    dumped = s.model_dump_json(exclude={"redis": {"password"}, "registry": {"password"}})
    cfg = {"settings": json.loads(dumped), "mode": mode, "key": KEY, **extra}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def assert_untouched(s: Settings, out: Path, npz: bytes, cache: bytes) -> None:
    assert out.read_bytes() == npz
    assert (s.training_dir / ".export_cache.json").read_bytes() == cache
    assert ExportCache(s.training_dir / ".export_cache.json").entry(KEY, out) is not None


def test_disk_full_rlimit_fsize(setup: tuple[Settings, Path, Path, bytes, bytes]) -> None:
    s, _, out, npz, cache = setup
    proc = child(s, "fsize", limit=1 << 20)
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 1, (stdout, stderr)
    assert "FAILED" in stdout and "File too large" in stdout, (stdout, stderr)
    assert_untouched(s, out, npz, cache)
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert leftovers == []  # the failed writer removed its temporary files
    assert not run_export(s, KEY).cache_hit  # and the next export works


@pytest.mark.parametrize("mode", ["kill_in_parts", "kill_in_zip"])
def test_killed_mid_write(setup: tuple[Settings, Path, Path, bytes, bytes], mode: str) -> None:
    s, _, out, npz, cache = setup
    proc = child(s, mode)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # log lines first; the child then blocks mid-write
            seen.append(line)
            if line.strip() == "WRITING":
                break
        assert seen and seen[-1].strip() == "WRITING", seen
        assert any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert_untouched(s, out, npz, cache)
    r = run_export(s, KEY)  # cleans the dead writer's leftovers and exports
    assert not r.cache_hit and r.games > 0
    assert [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []


@pytest.mark.parametrize("where", ["header", "pages"])
def test_corrupt_source(setup: tuple[Settings, Path, Path, bytes, bytes], where: str) -> None:
    s, db, out, npz, cache = setup
    data = bytearray(db.read_bytes())
    if where == "header":
        data[:100] = b"\xff" * 100
    else:
        start = len(data) // 4
        data[start:] = bytes((i * 7919) % 251 for i in range(len(data) - start))
    db.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"games\.db"):
        run_export(s, KEY, force=True)
    assert_untouched(s, out, npz, cache)


def test_not_enough_free_disk_is_refused_before_writing(
    setup: tuple[Settings, Path, Path, bytes, bytes],
) -> None:
    s, db, out, npz, cache = setup
    huge = settings_from_mapping(
        {"data_dir": str(s.data_dir), "game_dbs": [str(db)], "export": {"min_free_bytes": 1 << 60}}
    )
    with pytest.raises(ExportError, match="not enough free disk"):
        run_export(huge, KEY)
    assert_untouched(s, out, npz, cache)
