"""Fuzz through the real entry points: the CLI (in a subprocess for a few cases), the
export over a database with broken move JSON, and the trainer on a bad NPZ.

CLI: bad settings or arguments exit 2 with one ``bad settings: <path>: ...`` /
``error:`` line, never a traceback. Export: broken moves are counted and skipped;
an export that fails leaves the previous NPZ byte-for-byte intact. Trainer: a bad
file exits BAD_DATA (3) with one JSON error event.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.cli import EXIT_BAD_SETTINGS, main
from daemon.data.gamedb import GameDB
from daemon.export.job import ExportError, run_export
from daemon.npz import open_training_file
from daemon.selfplay_sim import write_games
from daemon.settings import settings_from_mapping
from daemon.training.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parents[2]
KEY = "square8_2p"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def _one_error_line(stderr: str, prefix: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, stderr
    return lines[0]


# -- CLI in subprocesses (a handful: each costs an interpreter start) ------------------------


@pytest.mark.parametrize(
    "text, field",
    [
        ("http: {port: 70000}\n", "http.port"),
        ("configs: ['../../x_2p']\n", "configs.0"),
        ("redis: {password: hunter2}\n", "redis.password"),
        ("[1, 2\n", "invalid YAML"),
    ],
)
def test_cli_bad_settings_file_exits_2_with_one_line(tmp_path: Path, text: str, field: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    p = _cli("check", "--config", str(cfg))
    assert p.returncode == EXIT_BAD_SETTINGS, p.stderr
    line = _one_error_line(p.stderr, "error: bad settings: ")
    assert field in line and ("c.yaml" in line or "." in field)
    assert "hunter2" not in p.stderr + p.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["frobnicate"],
        ["run", "--no-such-flag"],
        ["train", "../../x_2p"],
        ["export", "square8_2p/../../etc"],
    ],
)
def test_cli_bad_arguments_exit_2_in_subprocess(argv: list[str]) -> None:
    p = _cli(*argv)
    assert p.returncode == 2, (p.returncode, p.stderr)
    _one_error_line(p.stderr, "ringrift-daemon")  # argparse usage + one error line
    assert "error:" in p.stderr


# -- CLI in-process (cheap: many cases) ----------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    """``cli.main`` configures logging onto the captured stderr; put the defaults back."""
    import logging

    import structlog

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


cli_args = st.lists(
    st.one_of(
        st.sampled_from(
            ["run", "train", "export", "status", "check", "--json", "--force", "--once", "--output",
             "--config", "--log-level", "TRACE", "square8_2p", "../../x_2p", "--", "-x", "registry"]
        ),
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
    ),
    min_size=1,
    max_size=4,
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cli_args)
def test_cli_random_arguments_never_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    if not any(a in ("train", "export", "status", "check", "run", "registry") for a in argv[:1]):
        with pytest.raises(SystemExit) as info:
            main(argv, environ={})
        assert info.value.code in (0, 2)
        out = capsys.readouterr()
        assert "Traceback" not in out.err
        return
    cfg = tmp_path / "missing.yaml"
    args = [*argv, "--config", str(cfg)] if "--config" not in argv else argv
    try:
        rc = main(args, environ={})
    except SystemExit as e:  # argparse
        rc = e.code  # type: ignore[assignment]
    out = capsys.readouterr()
    assert rc == 2, (argv, rc, out.err)
    assert "Traceback" not in out.err


@pytest.mark.parametrize("key", ["../../x_2p", "square8_2p/../../etc", "square8_2p\u200b", "square8\uff12p"])
@pytest.mark.parametrize("cmd", ["train", "export"])
def test_cli_refuses_bad_keys_before_touching_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, cmd: str, key: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    with pytest.raises(SystemExit) as info:
        main([cmd, key, "--config", str(cfg)], environ={})
    assert info.value.code == 2
    assert "invalid config key" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


# -- move JSON in a database -> export: counted, skipped, previous NPZ intact ----------------

BROKEN = st.one_of(
    st.sampled_from(
        [
            "not json",
            "",
            "null",
            "[]",
            '{"type": "move_stack"}',
            '{"type": "move_stack", "from": {"x": 0, "y": 0}, "to": {"x": 99, "y": 99}}',
            '{"type": "place_ring", "to": {"x": -1, "y": 3}}',
            '{"type": "place_ring", "to": {"x": "3", "y": 3}}',
            '{"type": "overtaking_capture", "from": {"x": 0, "y": 0}, "to": {"x": 2, "y": 1}}',
            '{"type": "move_stack", "from": {"x": 1.5, "y": 0}, "to": {"x": 2, "y": 0}}',
            '{"to": {"x": 3, "y": 3, "z": 7}}',
        ]
    ),
    st.text(max_size=30),
)


def _db(tmp: Path, games: int = 60) -> Path:
    db = tmp / "games.db"
    write_games(db, KEY, games, seed=7)
    return db


def _break_moves(db: Path, rows: list[tuple[int, str]], players: list[int] | None = None) -> int:
    conn = sqlite3.connect(db)
    try:
        total = conn.execute("SELECT max(rowid) FROM game_moves").fetchone()[0]
        for i, (where, raw) in enumerate(rows):
            conn.execute("UPDATE game_moves SET move_json = ? WHERE rowid = ?", (raw, 1 + where % total))
            if players:
                conn.execute(
                    "UPDATE game_moves SET player = ? WHERE rowid = ?",
                    (players[i % len(players)], 1 + where % total),
                )
        conn.commit()
        return int(total)
    finally:
        conn.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.integers(0, 10**6), BROKEN), min_size=1, max_size=40), st.lists(st.integers(-3, 9))
)
def test_broken_moves_are_counted_never_crash(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[int, str]], players: list[int]
) -> None:
    tmp = tmp_path_factory.mktemp("mv")
    db = _db(tmp, 30)
    _break_moves(db, rows, players)
    gdb = GameDB(db)
    gdb.open()
    try:
        snap = gdb.refresh()
        assert snap.ok
        games = list(gdb.iter_games(KEY))
    finally:
        gdb.close()
    assert len(games) == snap.configs[KEY].usable_games
    s = settings_from_mapping({"data_dir": str(tmp / "data"), "game_dbs": [str(db)]}, {})
    try:
        res = run_export(s, KEY, force=True)
    except ExportError as e:  # e.g. every sample skipped: a typed error, no file
        assert KEY in str(e) or "sample" in str(e)
        assert not (tmp / "data" / "training" / f"{KEY}.npz").exists()
        return
    arrays = open_training_file(res.output)
    assert arrays.n == res.samples
    if any(not r.startswith("{") or "99" in r for _, r in rows):
        assert res.skipped.get("malformed_move", 0) >= 0


def test_export_over_broken_moves_skips_them_previous_npz_intact_on_failure(tmp_path: Path) -> None:
    db = _db(tmp_path, 80)
    s = settings_from_mapping({"data_dir": str(tmp_path / "data"), "game_dbs": [str(db)]}, {})
    first = run_export(s, KEY)
    assert first.samples > 0
    good = first.output.read_bytes()

    # Moves rewritten in place (writers only append, so the cache cannot see it): force.
    # Every move broken: whatever the export decides, the previous NPZ stays whole.
    total = _break_moves(db, [])
    _break_moves(db, [(i, "garbage") for i in range(total)])
    try:
        third = run_export(s, KEY, force=True)
    except ExportError as e:
        assert "Traceback" not in str(e)
        assert first.output.read_bytes() == good  # previous NPZ intact
    else:
        assert third.samples == 0 or open_training_file(third.output).n == third.samples
    leftovers = [p.name for p in first.output.parent.iterdir() if p.name != first.output.name]
    assert all(not n.endswith((".part", ".tmp")) and ".part" not in n for n in leftovers), leftovers


def test_a_game_with_only_broken_moves_is_skipped_not_fatal(tmp_path: Path) -> None:
    db = _db(tmp_path, 80)
    s = settings_from_mapping({"data_dir": str(tmp_path / "data"), "game_dbs": [str(db)]}, {})
    first = run_export(s, KEY)
    conn = sqlite3.connect(db)
    try:
        gid = conn.execute(
            "SELECT game_id FROM games WHERE game_status = 'completed' AND winner IS NOT NULL LIMIT 1"
        ).fetchone()[0]
        conn.execute("UPDATE game_moves SET move_json = '{not json' WHERE game_id = ?", (gid,))
        conn.commit()
    finally:
        conn.close()
    second = run_export(s, KEY, force=True)
    assert second.samples < first.samples
    assert second.skipped.get("malformed_move", 0) > first.skipped.get("malformed_move", 0)
    open_training_file(second.output)


# -- the trainer on a bad file (one subprocess: each imports torch) ---------------------------


def test_trainer_cli_random_bytes_is_bad_data_with_one_error_event(tmp_path: Path) -> None:
    data = tmp_path / "x.npz"
    data.write_bytes(np.random.default_rng(0).bytes(5000))
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "daemon.training", "--data", str(data), "--out", str(out), "--epochs", "1",
         "--batch-size", "8", "--device", "cpu", "--channels", "4", "--blocks", "1"],
        capture_output=True, text=True, timeout=90, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == ExitCode.BAD_DATA, p.stderr
    events: list[dict[str, Any]] = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith("{")]
    errors = [e for e in events if e.get("event") == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "BAD_DATA" and str(data) in errors[0]["message"]
    assert "Traceback" not in p.stderr
    assert not (out / "model.pt").exists()
    assert data.stat().st_size == 5000
