"""Schema v6 and v18, legacy board aliases, skip counts by reason."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from daemon.data.gamedb import GameDB
from daemon.selfplay_sim import GameFactory, connect_writer, insert_game


def _columns(path: Path, table: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
    finally:
        conn.close()


@pytest.mark.parametrize("version", [6, 18])
def test_v6_and_v18_read(tmp_path: Path, version: int) -> None:
    path = tmp_path / f"v{version}.db"
    writer = connect_writer(path, schema_version=version)
    f = GameFactory("hexagonal_2p", 3)
    try:
        for _ in range(3):
            insert_game(writer, f.make("completed"), schema_version=version)
    finally:
        writer.close()
    assert ("quality_score" in _columns(path, "games")) == (version >= 18)
    assert ("move_probs" in _columns(path, "game_moves")) == (version >= 18)
    db = GameDB(path)
    try:
        snap = db.refresh()
        games = list(db.iter_games("hexagonal_2p"))
    finally:
        db.close()
    assert snap.schema_version == version
    assert snap.configs["hexagonal_2p"].usable_games == 3
    assert len(games) == 3 and all(g.moves and g.board_type == "hexagonal" for g in games)
    for g in games:
        assert g.metadata.get("source") == "selfplay"
        assert ("opponent_type" in g.extra) == (version >= 18)
        for m in g.moves:
            if m.to_pos is not None:
                x, y, z = m.to_pos
                assert z is not None and x + y + z == 0


def _insert_raw(
    conn: sqlite3.Connection, gid: str, board: str, n: int, status: str, winner: int | None
) -> None:
    conn.execute(
        "INSERT INTO games(game_id, board_type, num_players, created_at, game_status, winner,"
        " total_moves, total_turns, schema_version) VALUES (?,?,?,?,?,?,0,0,18)",
        (gid, board, n, "2025-12-01T00:00:00+00:00", status, winner),
    )


def test_legacy_aliases_and_skip_reasons(tmp_path: Path) -> None:
    path = tmp_path / "mixed.db"
    conn = connect_writer(path)
    try:
        conn.execute("BEGIN")
        rows = [
            ("sq8", 2, "completed", 1),
            ("square8", 2, "finished", 2),
            ("sq8", 2, "active", None),
            ("square8", 2, "in_progress", None),
            ("square8", 2, "paused", None),
            ("sq8", 2, "abandoned", None),
            ("square8", 2, "completed", None),  # draw / no winner
            ("square8", 2, "weird", 1),  # unknown status
            ("hex", 3, "completed", 3),
            ("hex", 3, "COMPLETED", 1),
            ("hexagonal", 3, "waiting", None),
            ("sq19", 4, "completed", 4),
            ("square19", 4, "abandoned", None),
            ("hex8", 2, "completed", 2),
            ("chess", 2, "completed", 1),  # not a RingRift board: source-level "other"
            ("square8", 7, "completed", 1),  # impossible player count
        ]
        for i, (board, n, status, winner) in enumerate(rows):
            _insert_raw(conn, f"g{i}", board, n, status, winner)
        # An orphan: moves without a games row, two player rows, a square8 initial state.
        conn.execute(
            "INSERT INTO game_moves(game_id, move_number, turn_number, player, phase, move_type, move_json)"
            " VALUES ('orphan-1', 0, 0, 1, 'ring_placement', 'place_ring', '{\"type\":\"place_ring\"}')"
        )
        conn.executemany(
            "INSERT INTO game_players(game_id, player_number, player_type) VALUES ('orphan-1', ?, 'ai')",
            [(1,), (2,)],
        )
        conn.execute(
            "INSERT INTO game_initial_state(game_id, initial_state_json) VALUES ('orphan-1', ?)",
            ('{"boardType": "sq8", "players": [{}, {}]}',),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()

    db = GameDB(path)
    try:
        snap = db.refresh()
        sq8 = list(db.iter_games("square8_2p"))
        hexa = list(db.iter_games("hexagonal_3p"))
        sq19 = list(db.iter_games("square19_4p"))
    finally:
        db.close()
    c = snap.configs
    assert c["square8_2p"].usable_games == 2
    assert c["square8_2p"].skipped.as_dict() == {
        "orphan": 1,
        "active": 3,
        "abandoned": 1,
        "no_winner": 1,
        "other": 1,
        "undecodable": 0,
        "bad_winner": 0,
    }
    assert c["hexagonal_3p"].usable_games == 2
    assert c["hexagonal_3p"].skipped.active == 1
    assert c["square19_4p"].usable_games == 1 and c["square19_4p"].skipped.abandoned == 1
    assert c["hex8_2p"].usable_games == 1
    assert set(c) == {"square8_2p", "hexagonal_3p", "square19_4p", "hex8_2p"}
    assert snap.orphans == ("orphan-1",)
    # Streaming sees the same games under canonical names.
    assert sorted(g.game_id for g in sq8) == ["g0", "g1"]
    assert {g.board_type for g in sq8 + hexa + sq19} == {"square8", "hexagonal", "square19"}
    assert len(sq19) == 1
    # iter_games matches statuses case-insensitively, like the counts.
    assert sorted(g.game_id for g in hexa) == ["g8", "g9"]


def test_orphan_resolved_when_games_row_arrives(tmp_path: Path) -> None:
    path = tmp_path / "late.db"
    conn = connect_writer(path)
    db = GameDB(path)
    try:
        conn.execute(
            "INSERT INTO game_moves(game_id, move_number, turn_number, player, phase, move_type, move_json)"
            " VALUES ('late', 0, 0, 1, 'ring_placement', 'place_ring', '{}')"
        )
        conn.executemany(
            "INSERT INTO game_players(game_id, player_number, player_type) VALUES ('late', ?, 'ai')",
            [(1,), (2,)],
        )
        conn.execute(
            "INSERT INTO game_initial_state(game_id, initial_state_json) VALUES ('late', ?)",
            ('{"boardType": "hex8", "players": [{}, {}]}',),
        )
        snap = db.refresh()
        assert snap.orphans == ("late",) and snap.configs["hex8_2p"].skipped.orphan == 1
        _insert_raw(conn, "late", "hex8", 2, "completed", 1)
        snap = db.refresh()
        assert snap.orphans == ()
        assert snap.configs["hex8_2p"].skipped.orphan == 0 and snap.configs["hex8_2p"].usable_games == 1
    finally:
        conn.close()
        db.close()
