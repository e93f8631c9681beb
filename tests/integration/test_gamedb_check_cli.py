"""``ringrift-daemon check``: ok lines and exit 0; a FAIL line naming the problem and exit 1.

An unreadable game database (or none matching) does not stop the service (DESIGN 13): a WARN
line naming it, exit 0.
"""

from __future__ import annotations

import json
import os
import sqlite3
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


def test_check_missing_db_is_a_warning(tmp_path: Path, real_db: Path) -> None:
    missing = tmp_path / "games" / "missing.db"
    out = _check(tmp_path, f"data_dir: {tmp_path / 'data'}\ngame_dbs: ['{missing}', '{real_db}']\n")
    assert out.returncode == 0, out
    lines = out.stdout.splitlines()
    assert f"WARN db {missing}: file not found" in lines
    assert f"ok   db {real_db}: schema v6, 5 usable games" in lines
    assert not [line for line in lines if line.startswith("FAIL")], lines


def test_check_unreadable_db_is_a_warning(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database at all" * 100)
    out = _check(tmp_path, f"data_dir: {tmp_path / 'data'}\ngame_dbs: ['{bad}']\n")
    assert out.returncode == 0, out
    assert f"WARN db {bad}: not an SQLite database" in out.stdout.splitlines()


def test_check_no_database_matching_is_a_warning(tmp_path: Path) -> None:
    pattern = tmp_path / "nowhere" / "*.db"
    out = _check(tmp_path, f"data_dir: {tmp_path / 'data'}\ngame_dbs: ['{pattern}']\n")
    assert out.returncode == 0, out
    assert f"WARN game_dbs: no database matches ['{pattern}'] (the service starts and reports it)" in (
        out.stdout.splitlines()
    )


def test_check_newer_schema_is_a_warning(tmp_path: Path, real_db: Path) -> None:
    conn = sqlite3.connect(real_db)
    conn.execute("UPDATE schema_metadata SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    out = _check(tmp_path, f"data_dir: {tmp_path / 'data'}\ngame_dbs: ['{real_db}']\n")
    assert out.returncode == 0, out
    lines = out.stdout.splitlines()
    assert f"ok   db {real_db}: schema v99, 5 usable games" in lines
    warning = "schema_version 99 is newer than this reader knows (v18); reading the columns it has"
    assert f"WARN db {real_db}: {warning}" in lines


def test_check_json_lists_warnings(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    cfg = tmp_path / "check.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\ngame_dbs: ['{missing}']\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_DAEMON_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "check", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out
    doc = json.loads(out.stdout)
    assert doc["ok"] is True
    (db,) = [c for c in doc["checks"] if c["name"] == f"db {missing}"]
    assert db == {"name": f"db {missing}", "ok": True, "warning": True, "detail": "file not found"}


def test_check_unwritable_data_dir(tmp_path: Path, real_db: Path) -> None:
    # A regular file in the way: not writable even for root (chmod would not stop root).
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    data = blocker / "data"
    out = _check(tmp_path, f"data_dir: {data}\ngame_dbs: ['{real_db}']\n")
    assert out.returncode == 1, out
    fails = [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    assert fails == [f"FAIL data_dir: {data} is not writable: Not a directory"]


def test_check_fails_on_an_encoder_that_cannot_be_imported(tmp_path: Path) -> None:
    out = _check(tmp_path, f"data_dir: {tmp_path / 'data'}\nexport:\n  encoder: 'no_such_pkg.encoders:Enc'\n")
    assert out.returncode == 1, out
    fail = [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fail) == 1 and fail[0].startswith("FAIL encoder: export.encoder 'no_such_pkg.encoders:Enc'")
    assert "cannot import module 'no_such_pkg.encoders'" in fail[0]
