"""Registry under real processes (SQLite file and real PostgreSQL): concurrent writers, SIGKILL
mid-registration, torch-free import."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.registry import ModelRegistry
from tests.support.registry_backends import registry_url

__all__ = ["registry_url"]  # the parametrized fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[2]

WRITER = r"""
import json, os, sys
from pathlib import Path
from daemon.registry import ModelRegistry
reg_dir, worker, n, work = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
url = sys.argv[5] or None
ids = []
with ModelRegistry(reg_dir, url=url) as reg:
    for i in range(n):
        f = work / f"w{worker}-{i}.pt"
        f.write_bytes(os.urandom(4096 + 64 * i))
        ids.append(reg.register(f, "square8", 2, {"worker": worker}, {"i": i}, [], None,
                                run_id=f"w{worker}-{i}", fencing_token=1))
print(json.dumps(ids))
"""

STOPPER = r"""
import os, signal, sys
from pathlib import Path
from daemon.registry import ModelRegistry
reg_dir, stop_at, model, url = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4] or None

def hook(point):
    if point == stop_at:
        print(point, flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)

with ModelRegistry(reg_dir, url=url, hook=hook) as reg:
    reg.register(model, "square8", 2, fencing_token=3)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_four_processes_25_registrations_each(tmp_path: Path, registry_url: str | None) -> None:
    reg_dir = tmp_path / "reg"
    with ModelRegistry(reg_dir, url=registry_url):  # not required: writers create it too
        pass
    work = tmp_path / "work"
    work.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(reg_dir), str(w), "25", str(work), registry_url or ""],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=tmp_path,
        )
        for w in range(4)
    ]
    ids: list[str] = []
    for p in procs:
        out, err = p.communicate(timeout=100)
        assert p.returncode == 0, err
        ids += json.loads(out.strip().splitlines()[-1])  # structlog prints to stdout too
    assert len(set(ids)) == 100
    with ModelRegistry(reg_dir, url=registry_url) as reg:
        models = reg.list_models(config="square8_2p")
        assert sorted(m.version for m in models) == list(range(1, 101))
        assert sorted(m.model_id for m in models) == sorted(ids)
        for m in models:
            assert _sha(Path(m.path)) == m.sha256 and Path(m.path).stat().st_size == m.size
        assert len({m.sha256 for m in models}) == 100
        names = sorted(p.name for p in reg.objects_dir.iterdir())
        assert len(names) == 100 and not [n for n in names if n.startswith(".tmp-")]
        assert reg.collect_garbage(now=datetime.now(UTC) + timedelta(days=1)).orphans_removed == []
        assert reg.verify() == []


def _wait_stopped(proc: subprocess.Popen[str], deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        time.sleep(0.02)
    raise AssertionError("writer never stopped")


@pytest.mark.parametrize("stop_at", ["copied", "published"])
def test_sigkill_between_copy_and_commit_leaves_nothing(
    tmp_path: Path, stop_at: str, registry_url: str | None
) -> None:
    reg_dir = tmp_path / "reg"
    model = tmp_path / "m.pt"
    model.write_bytes(os.urandom(10_000))
    proc = subprocess.Popen(
        [sys.executable, "-c", STOPPER, str(reg_dir), stop_at, str(model), registry_url or ""],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == stop_at
        _wait_stopped(proc)
        objects = reg_dir / "objects" / "sha256"
        # The object is published when staged (young, so GC keeps it); the row never came.
        assert [p.name for p in objects.iterdir()] == [f"{_sha(model)}.pt"]
        if stop_at == "copied":  # (at "published" the stopped writer holds the write lock)
            with ModelRegistry(reg_dir, url=registry_url) as other:  # another process's open() and GC
                assert other.sweep_temp_files() == []
                assert other.collect_garbage().orphans_kept == [str(objects / f"{_sha(model)}.pt")]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with ModelRegistry(reg_dir, url=registry_url) as reg:  # the next start
        assert reg.list_models() == [] and reg.get_latest("square8_2p") is None
        reg.collect_garbage(now=datetime.now(UTC) + timedelta(hours=2))
        assert list(reg.objects_dir.iterdir()) == []
        # The killed writer's token was never accepted: the version and token start fresh.
        assert reg.highest_token("square8_2p") == 0
        assert reg.register(model, "square8", 2, fencing_token=3) == "square8_2p-v1"
        assert _sha(Path(reg.require_model("square8_2p-v1").path)) == _sha(model)


def test_registry_does_not_import_torch_but_reads_checkpoint_metadata(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    ckpt = tmp_path / "model.pt"
    meta = {
        "config_key": "square8_2p",
        "parent": None,
        "fencing_token": 4,
        "losses": [{"epoch": 1, "val_loss": 0.5}],
        "architecture": {"channels": 8, "blocks": 1},
    }
    torch.save(
        {"format_version": 1, "model_state": torch.nn.Linear(3, 2).state_dict(), "metadata": meta}, ckpt
    )
    code = (
        "import sys, json; from pathlib import Path; from daemon.registry import ModelRegistry\n"
        "with ModelRegistry(Path(sys.argv[1])) as r:\n"
        "    mid = r.register(Path(sys.argv[2]), 'square8', 2, fencing_token=4)\n"
        "    meta = r.require_model(mid).checkpoint_metadata\n"
        "    print(json.dumps({'torch': 'torch' in sys.modules, 'meta': meta}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "reg"), str(ckpt)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"torch": False, "meta": meta}
