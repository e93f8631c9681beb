"""Read-only commands (status, health, registry list/show/lineage) never create or write a file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.selfplay_sim import write_games

ROOT = Path(__file__).resolve().parents[2]


def _cli(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_DAEMON_")}
    env["PYTHONPATH"] = str(ROOT)
    # A generous bound, not a deadline: on a loaded 2-core machine one CLI start takes seconds.
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its sha256 and mtime: any write shows up."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = f"{hashlib.sha256(p.read_bytes()).hexdigest()}:{st.st_mtime_ns}"
        else:
            out[str(p.relative_to(root))] = "dir"
    return out


READ_ONLY = [("status",), ("status", "--json"), ("health",), ("health", "--json"), ("registry", "list")]


@pytest.mark.parametrize("args", READ_ONLY)
def test_nothing_created_in_an_empty_directory(tmp_path: Path, args: tuple[str, ...]) -> None:
    # No config file, no data/ directory: the built-in defaults point at ./data.
    out = _cli(tmp_path, *args)
    assert out.returncode == 0, out
    assert list(tmp_path.iterdir()) == [], "a read-only command created files"


@pytest.mark.timeout(900)  # a real service pass plus seven CLI runs: slow on a loaded machine
def test_status_writes_nothing_to_existing_state(tmp_path: Path) -> None:
    games = tmp_path / "games.db"
    write_games(games, "square8_2p", 150, seed=1)
    data = tmp_path / "data"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data_dir: {data}\ngame_dbs: ['{games}']\nconfigs: [square8_2p]\n"
        "training: {epochs: 1, channels: 8, blocks: 1, device: cpu}\n"
        "http: {port: 0}\n"  # never the standard port: something may listen there
    )
    # A real service pass creates the state the read-only commands then read.
    first = _cli(tmp_path, "run", "--once", "--config", str(cfg), timeout=800)
    assert first.returncode == 0, first
    assert (data / "state" / "decide.db").exists() and (data / "model_registry").exists()
    before = _tree(data)
    for args in READ_ONLY:
        out = _cli(tmp_path, *args, "--config", str(cfg))
        assert out.returncode == 0, (args, out)
    report = json.loads(_cli(tmp_path, "status", "--json", "--config", str(cfg)).stdout)
    assert report["configs"]["square8_2p"]["latest_model"] == "square8_2p-v1"
    assert _tree(data) == before, "a read-only command wrote to the state directory"
