"""Chaos: ``game_dbs`` matches a FIFO, a directory, a unix socket or a device (DESIGN 13).

(Or a database whose ``-journal`` is a FIFO: SQLite opens that name too.)

Such a path is an unhealthy source with the reason (``not a regular file: FIFO`` ...), found
by ``stat`` and never opened, so nothing blocks: ``check`` (a WARN line, exit 0: the service
would serve the rest), ``status`` and the real service (``run --once``, and a long-running
one stopped by SIGTERM) all finish well within a generous bound, and the good database is
read and trained on. Every process runs under a timeout: a hang fails the test, not the suite.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.selfplay_sim import write_games
from tests.chaos._helpers import node_mapping, run_cli, settings_of, start_service, wait_until, write_config

KEY = "square8_2p"
REASONS = {
    "fifo": "not a regular file: FIFO",
    "directory": "is a directory",
    "socket": "not a regular file: socket",
    "devnull": "not a regular file: character device",
    # A real database whose hot-journal name is a FIFO: SQLite would open that one, and block.
    "journal_fifo": "its journal file: not a regular file: FIFO",
}
BOUND = 90.0  # seconds; each of these finishes in a few when nothing blocks


def _make(kind: str, path: Path, keep: list[socket.socket]) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.listen(1)
        keep.append(s)
    elif kind == "devnull":
        path.symlink_to("/dev/null")
    elif kind == "journal_fifo":
        write_games(path, KEY, 3, seed=9)
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        os.mkfifo(f"{path}-journal")
    else:
        raise AssertionError(kind)


@pytest.fixture
def games(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Path]]]:
    """``games/good.db`` (square8_2p) beside one special file of each kind, all matching ``*.db``."""
    d = tmp_path / "g"  # short: a unix socket path has a length limit
    d.mkdir()
    write_games(d / "good.db", KEY, 60, seed=5)
    keep: list[socket.socket] = []
    special = {kind: d / f"{kind}.db" for kind in REASONS}
    for kind, path in special.items():
        _make(kind, path, keep)
    try:
        yield d, special
    finally:
        for s in keep:
            s.close()


def _config(tmp_path: Path, pattern: str) -> Path:
    return write_config(tmp_path, node_mapping(tmp_path, Path(pattern), [KEY]))


def _cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return run_cli(args, timeout=BOUND)
    except subprocess.TimeoutExpired as e:
        what = f"{args[0]} did not finish within {BOUND:.0f}s (blocked on a special file?)"
        raise AssertionError(what) from e


@pytest.mark.parametrize("kind", list(REASONS))
def test_check_and_status_name_the_special_file_and_finish(tmp_path: Path, kind: str) -> None:
    d = tmp_path / "g"
    d.mkdir()
    write_games(d / "good.db", KEY, 30, seed=3)
    keep: list[socket.socket] = []
    bad = d / f"x_{kind}.db"
    _make(kind, bad, keep)
    try:
        cfg = _config(tmp_path, str(d / "*.db"))
        out = _cli(["check", "--config", str(cfg)])
        lines = out.stdout.splitlines()
        assert out.returncode == 0, out
        assert f"WARN db {bad}: {REASONS[kind]}" in lines, lines
        assert any(line.startswith(f"ok   db {d / 'good.db'}: ") for line in lines), lines
        st = _cli(["status", "--json", "--config", str(cfg)])
        assert st.returncode == 0, st
        sources = json.loads(st.stdout)["sources"]
        assert sources[str(bad)]["ok"] is False
        assert sources[str(bad)]["error"] == f"{bad}: {REASONS[kind]}"
        assert sources[str(d / "good.db")]["ok"] is True
    finally:
        for s in keep:
            s.close()


def test_service_serves_the_good_database_beside_special_files(
    tmp_path: Path, games: tuple[Path, dict[str, Path]]
) -> None:
    d, special = games
    cfg = _config(tmp_path, str(d / "*.db"))
    settings = settings_of(node_mapping(tmp_path, d / "*.db", [KEY]))

    once = _cli(["run", "--once", "--config", str(cfg)])
    assert once.returncode == 0, once.stderr[-3000:]
    events = [json.loads(line) for line in once.stderr.splitlines() if line.startswith("{")]
    unhealthy = {e["source"]: e["reason"] for e in events if e.get("event") == "source.unhealthy"}
    for kind, path in special.items():
        assert unhealthy.get(str(path)) == f"{path}: {REASONS[kind]}", (kind, unhealthy)
    assert (settings.training_dir / f"{KEY}.npz").exists()  # the good source was exported and trained
    assert any(e.get("event") == "run.succeeded" for e in events), [e.get("event") for e in events]
    skipped = {e["source"] for e in events if e.get("event") == "export.source_skipped"}
    assert skipped == {str(p) for p in special.values()}, skipped  # left out of the export, not fatal to it
    (entry,) = json.loads((settings.training_dir / ".export_cache.json").read_text())["entries"].values()
    assert entry["skipped"]["unreadable_sources"] == len(special)

    # The long-running service: polls, reports, and stops on SIGTERM.
    log = tmp_path / "service.log"
    proc = start_service(cfg, log)
    try:
        wait_until(
            lambda: log.read_text().count('"source.unhealthy"') >= len(special),
            BOUND,
            what="every special file reported unhealthy",
        )
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=BOUND)
        except subprocess.TimeoutExpired:
            raise AssertionError("the service did not stop on SIGTERM") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()[-3000:]
    with sqlite3.connect(d / "good.db") as conn:  # and the good file is untouched by the reader
        assert conn.execute("SELECT count(*) FROM games").fetchone()[0] == 60
