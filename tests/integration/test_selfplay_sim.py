"""The synthetic self-play writer: realistic, valid, atomic per game, deterministic."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from daemon.data.gamedb import GameDB
from daemon.keys import ALL_CONFIG_KEYS, geometry, parse_config_key
from daemon.selfplay_sim import SelfPlaySim, write_games

ROOT = Path(__file__).resolve().parents[2]


def _rows(path: Path, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def _game_moves(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """game_id -> [(move_number, player, move_type, from, to)] (timestamps left out)."""
    out: dict[str, list[tuple[object, ...]]] = {}
    for gid, n, player, mtype, raw in _rows(
        path, "SELECT game_id, move_number, player, move_type, move_json FROM game_moves ORDER BY rowid"
    ):
        d = orjson.loads(str(raw))
        out.setdefault(str(gid), []).append((n, player, mtype, json.dumps(d["from"]), json.dumps(d["to"])))
    return out


def test_lengths_and_coordinates_per_board(tmp_path: Path) -> None:
    path = tmp_path / "all.db"
    for i, key in enumerate(ALL_CONFIG_KEYS):
        write_games(path, key, 6, seed=i, active_share=0, abandoned_share=0, draw_share=0)
    db = GameDB(path)
    try:
        snap = db.refresh()
        mean_len: dict[str, float] = {}
        for key in ALL_CONFIG_KEYS:
            assert snap.configs[key].usable_games == 6
            board, n = parse_config_key(key)
            geo = geometry(board)
            games = list(db.iter_games(key))
            lengths = [len(g.moves) for g in games]
            mean_len[key] = statistics.mean(lengths)
            assert all(0.6 * geo.moves_per_game <= x <= 1.4 * geo.moves_per_game for x in lengths), (
                key,
                lengths,
            )
            for g in games:
                assert g.winner is not None and 1 <= g.winner <= n
                assert [m.move_number for m in g.moves] == list(range(len(g.moves)))
                assert {m.player for m in g.moves} == set(range(1, n + 1))
                assert g.ranking is not None and g.ranking[0] == g.winner
                for m in g.moves:
                    assert m.valid
                    for pos in (m.from_pos, m.to_pos, m.capture_target):
                        if pos is None:
                            continue
                        assert geo.to_grid(*pos) is not None, (key, m)
                        if geo.is_hex:
                            assert pos[2] is not None and sum(p for p in pos if p is not None) == 0
                        else:
                            assert pos[2] is None
                assert any(m.move_type == "place_ring" for m in g.moves)
                assert any(m.move_type == "move_stack" for m in g.moves)
    finally:
        db.close()
    board_mean = {
        b: statistics.mean(mean_len[f"{b}_{n}p"] for n in (2, 3, 4))
        for b in ("square8", "square19", "hex8", "hexagonal")
    }
    assert board_mean["square19"] > board_mean["hexagonal"] > board_mean["square8"] > board_mean["hex8"]


def test_planted_structure_from_follows_previous_to(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    write_games(path, "square8_2p", 20, seed=9, active_share=0, abandoned_share=0, draw_share=0)
    db = GameDB(path)
    try:
        games = list(db.iter_games("square8_2p"))
    finally:
        db.close()
    follows = total = 0
    for g in games:
        last_to: dict[int, object] = {}
        for m in g.moves:
            if m.move_type in ("move_stack", "overtaking_capture"):
                total += 1
                follows += m.from_pos == last_to.get(m.player)
            if m.move_type != "no_line_action" and m.to_pos is not None:
                last_to[m.player] = m.to_pos
    assert total > 100 and follows / total > 0.8


def test_status_shares(tmp_path: Path) -> None:
    path = tmp_path / "shares.db"
    n = 400
    usable = write_games(path, "hex8_2p", n, seed=2, active_share=0.2, abandoned_share=0.1, draw_share=0.1)
    counts = dict(
        _rows(
            path,
            "SELECT game_status || CASE WHEN winner IS NULL THEN '-' ELSE '+' END, count(*)"
            " FROM games GROUP BY 1",
        )
    )
    assert sum(counts.values()) == n
    assert abs(counts.get("active-", 0) / n - 0.2) < 0.07
    assert abs(counts.get("abandoned-", 0) / n - 0.1) < 0.05
    assert abs(counts.get("completed-", 0) / n - 0.1) < 0.05
    assert counts.get("completed+", 0) == usable
    db = GameDB(path)
    try:
        c = db.refresh().configs["hex8_2p"]
    finally:
        db.close()
    assert c.usable_games == usable
    assert (c.skipped.active, c.skipped.abandoned, c.skipped.no_winner) == (
        counts.get("active-", 0),
        counts.get("abandoned-", 0),
        counts.get("completed-", 0),
    )
    # Active and abandoned games are cut short.
    (short,) = _rows(path, "SELECT avg(total_moves) FROM games WHERE game_status != 'completed'")[0]
    (full,) = _rows(path, "SELECT avg(total_moves) FROM games WHERE game_status = 'completed'")[0]
    assert float(str(short)) < 0.7 * float(str(full))


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"
    write_games(a, "hexagonal_3p", 8, seed=11)
    write_games(b, "hexagonal_3p", 8, seed=11)
    write_games(c, "hexagonal_3p", 8, seed=12)
    q = "SELECT game_id, game_status, winner, total_moves FROM games ORDER BY rowid"
    assert _rows(a, q) == _rows(b, q)
    assert _game_moves(a) == _game_moves(b)
    assert _rows(a, q) != _rows(c, q)


def test_same_seed_twice_and_across_configs_never_collides(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    write_games(path, "square8_2p", 5, seed=0)
    write_games(path, "hex8_2p", 5, seed=0)
    write_games(path, "square8_2p", 5, seed=0)  # a restarted writer, same seed
    assert _rows(path, "SELECT count(DISTINCT game_id), count(*) FROM games") == [(15, 15)]


WRITER = """
import sys
from pathlib import Path
from daemon.selfplay_sim import write_games
write_games(Path(sys.argv[1]), "square19_2p", int(sys.argv[2]), seed=5, active_share=0.1)
print("done", flush=True)
"""


def test_one_transaction_per_game_seen_by_a_concurrent_reader(tmp_path: Path) -> None:
    path = tmp_path / "atomic.db"
    write_games(path, "square19_2p", 1, seed=4)  # schema + WAL first
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "150"], env=env, stdout=subprocess.PIPE, text=True
    )
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    checks = 0
    sizes = set()
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None:
            assert time.monotonic() < deadline
            # One statement = one snapshot: every games row must come with all its moves.
            bad = conn.execute(
                "SELECT g.game_id, g.total_moves,"
                " (SELECT count(*) FROM game_moves m WHERE m.game_id = g.game_id) AS n"
                " FROM games g WHERE n != g.total_moves"
            ).fetchall()
            assert bad == []
            partial = conn.execute(
                "SELECT count(*) FROM (SELECT DISTINCT game_id FROM game_moves)"
                " WHERE game_id NOT IN (SELECT game_id FROM games)"
            ).fetchone()[0]
            assert partial == 0  # no moves ahead of their games row
            sizes.add(conn.execute("SELECT count(*) FROM games").fetchone()[0])
            checks += 1
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        conn.close()
    assert proc.returncode == 0 and "done" in out
    assert checks >= 3 and len(sizes) >= 3, (checks, sizes)
    assert _rows(path, "SELECT count(*) FROM games") == [(151,)]


async def test_selfplay_sim_runs_until_max_games(tmp_path: Path) -> None:
    path = tmp_path / "sim.db"
    sim = SelfPlaySim(path, ["square8_2p", "hex8_3p"], rate=500.0, seed=1)
    stop = asyncio.Event()
    written = await asyncio.wait_for(sim.run(stop, max_games=10), timeout=60)
    assert written == 10
    rows = dict(_rows(path, "SELECT board_type || '_' || num_players || 'p', count(*) FROM games GROUP BY 1"))
    assert rows == {"square8_2p": 5, "hex8_3p": 5}
    # A restart with the same seed appends instead of colliding.
    again = SelfPlaySim(path, ["square8_2p"], rate=500.0, seed=1)
    assert await asyncio.wait_for(again.run(asyncio.Event(), max_games=3), timeout=60) == 3
    assert _rows(path, "SELECT count(DISTINCT game_id) FROM games") == [(13,)]


@pytest.mark.parametrize("key", ["square8_2p"])
def test_selfplay_cli(tmp_path: Path, key: str) -> None:
    db = tmp_path / "cli.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGRIFT_DAEMON_")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon",
            "selfplay-sim",
            "--config",
            str(ROOT / "config.yaml"),
            "--db",
            str(db),
            "--key",
            key,
            "--rate",
            "1000",
            "--games",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"db": str(db), "written": 4}
    assert _rows(db, "SELECT value FROM schema_metadata WHERE key='schema_version'") == [("18",)]
    assert _rows(db, "PRAGMA journal_mode") == [("wal",)]
