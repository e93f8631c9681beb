"""``ringrift-daemon check``: ok lines and exit 0; a FAIL line naming the problem and exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _check(tmp_path: Path, yaml_text: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "check.yaml"
    cfg.write_text(yaml_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_DAEMON_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "daemon", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


def test_check_ok(tmp_path: Path, real_db: Path) -> None:
    data = tmp_path / "data"
    out = _check(tmp_path, f"data_dir: {data}\ngame_dbs: ['{real_db.parent}/*.db']\n")
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out
    assert lines and all(line.startswith("ok") for line in lines), lines
    assert f"ok   db {real_db}: schema v6, 5 usable games" in lines
    assert f"ok   data_dir: {data} writable" in lines
    assert any(line.startswith("ok   torch: torch ") and "device cpu" in line for line in lines)


def test_check_missing_db(tmp_path: Path) -> None:
    missing = tmp_path / "games" / "missing.db"
    out = _check(tmp_path, f"data_dir: {tmp_path / 'data'}\ngame_dbs: ['{missing}']\n")
    assert out.returncode == 1, out
    assert f"FAIL db {missing}: file not found" in out.stdout.splitlines()


def test_check_unwritable_data_dir(tmp_path: Path, real_db: Path) -> None:
    # A regular file in the way: not writable even for root (chmod would not stop root).
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    data = blocker / "data"
    out = _check(tmp_path, f"data_dir: {data}\ngame_dbs: ['{real_db}']\n")
    assert out.returncode == 1, out
    fails = [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    assert fails == [f"FAIL data_dir: {data} is not writable: Not a directory"]
