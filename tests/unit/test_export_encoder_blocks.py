"""The block encoder (many games per numpy pass, bit-packed planes) against the reference.

``tests/support/encoder_reference.py`` is the first, per-game dense
implementation; the shipped encoder must give exactly its planes, policies,
globals, values and skip counts for any block of games, on every board.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.data.gamedb import Game, Move, parse_move
from daemon.data.games import JsonPos, MoveColumns
from daemon.export.encoder import MALFORMED, EncoderError, MoveHistoryEncoder
from daemon.keys import geometry
from daemon.npz import cells_to_dense
from tests.support.encoder_reference import ReferenceEncoder

TYPES = [
    "place_ring",
    "move_stack",
    "overtaking_capture",
    "chain_capture",
    "process_line",
    "no_line_action",
    "no_placement_action",
    "skip_capture",
    "pass",
    "weird",
    None,
]
PHASES = ["ring_placement", "movement", "capture", "line_processing", None, "other"]
ARRAYS = ("globals", "values", "values_mp", "policy_index", "move_numbers", "player_to_move")


@st.composite
def positions(draw: st.DrawFn, board: str) -> tuple[int, int, int | None] | None:
    g = geometry(board)
    if draw(st.integers(0, 9)) == 0:
        return None
    if g.is_hex:
        r = g.radius
        x, z = draw(st.integers(-r - 1, r + 1)), draw(st.integers(-r - 1, r + 1))
        y = -x - z if draw(st.booleans()) else draw(st.integers(-3, 3))
        return x, y, draw(st.sampled_from([z, z, None]))
    return draw(st.integers(-1, g.grid)), draw(st.integers(-1, g.grid)), None


@st.composite
def blocks(draw: st.DrawFn) -> tuple[str, int, list[Game]]:
    board = draw(st.sampled_from(["square8", "square19", "hex8", "hexagonal"]))
    n = draw(st.integers(2, 4))
    games = []
    for gi in range(draw(st.integers(1, 5))):
        moves = [
            Move(
                i,
                draw(st.integers(-1, n + 1)),
                draw(st.sampled_from(PHASES)),
                draw(st.sampled_from(TYPES)),
                draw(positions(board)),
                draw(positions(board)),
                draw(positions(board)),
                draw(st.integers(0, 19)) > 0,
            )
            for i in range(draw(st.integers(0, 30)))
        ]
        winner = draw(st.integers(1, n))
        ranking = draw(st.sampled_from([None, [winner, *[s for s in range(1, n + 1) if s != winner]]]))
        games.append(Game(f"g{gi}", gi, board, n, "completed", winner, None, None, {}, [], moves, ranking))
    return board, n, games


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks(), st.integers(1, 4), st.integers(1, 3))
def test_block_encoder_equals_reference(block: tuple[str, int, list[Game]], hl: int, every: int) -> None:
    board, _, games = block
    out = MoveHistoryEncoder(hl).encode_games(games, every)
    refs = [ReferenceEncoder(hl).encode_game(g, every) for g in games]
    assert out.features.shape[1:] == (16 * hl + 1,) and out.features.dtype == np.int16
    dense = cells_to_dense(out.features, MoveHistoryEncoder(hl).feature_constant(board))
    assert np.array_equal(dense, np.concatenate([r.features for r in refs]))
    for name in ARRAYS:
        assert np.array_equal(getattr(out, name), np.concatenate([getattr(r, name) for r in refs])), name
    assert out.skipped.get(MALFORMED, 0) == sum(r.skipped.get(MALFORMED, 0) for r in refs)
    expect_gi = np.concatenate([np.full(r.n, i) for i, r in enumerate(refs)])
    assert out.game_index is not None and np.array_equal(out.game_index, expect_gi)
    # One game at a time gives the same rows as the block.
    single = [MoveHistoryEncoder(hl).encode_game(g, every) for g in games]
    assert np.array_equal(out.features, np.concatenate([s.features for s in single]))
    # The same games with their moves as columns of decoded positions (the database path).
    cols = MoveHistoryEncoder(hl).encode_games([replace(g, moves=_columns(g.moves)) for g in games], every)
    for name in ("features", *ARRAYS, "game_index"):
        assert np.array_equal(getattr(cols, name), getattr(out, name)), name


def _columns(moves: Sequence[Move]) -> MoveColumns:
    def js(p: tuple[int, int, int | None] | None) -> JsonPos | None:
        return None if p is None else JsonPos(*p)

    return MoveColumns(
        [m.move_number for m in moves],
        [m.player for m in moves],
        [m.phase for m in moves],
        [m.move_type for m in moves],
        [js(m.from_pos) for m in moves],
        [js(m.to_pos) for m in moves],
        [js(m.capture_target) for m in moves],
        [m.valid for m in moves],
    )


def test_history_never_crosses_games() -> None:
    place = [Move(i, 1 + i % 2, "ring_placement", "place_ring", None, (i, 0, None), None) for i in range(4)]
    a = Game("a", 1, "square8", 2, "completed", 1, None, None, {}, [], place, None)
    b = Game("b", 2, "square8", 2, "completed", 1, None, None, {}, [], place[:1], None)
    out = MoveHistoryEncoder(2).encode_games([a, b])
    first_of_b = cells_to_dense(out.features, MoveHistoryEncoder(2).feature_constant("square8"))[4]
    assert first_of_b[:-1].sum() == 0  # no history at a game's first move


def test_blocks_must_share_board_and_players() -> None:
    a = Game("a", 1, "square8", 2, "completed", 1, None, None, {}, [], [], None)
    b = Game("b", 2, "hex8", 2, "completed", 1, None, None, {}, [], [], None)
    with pytest.raises(EncoderError, match="share board"):
        MoveHistoryEncoder(2).encode_games([a, b])
    with pytest.raises(EncoderError, match="at least one"):
        MoveHistoryEncoder(2).encode_games([])


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
        lambda c: (
            st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["x", "y", "z", "q"]), c, max_size=4)
        ),
        max_leaves=8,
    ),
    st.sampled_from(["from", "to", "captureTarget", "type"]),
)
def test_schema_decoder_matches_a_full_json_parse(value: object, key: str) -> None:
    # parse_move decodes against a schema of four fields; any odd value must give
    # the same answer as picking the field out of a fully parsed object.
    import json

    try:
        raw = json.dumps({"type": "move_stack", key: value, "extra": [1, {"a": 2}]}, allow_nan=False)
    except ValueError:
        return
    m = parse_move(1, 1, None, None, raw)
    assert m.valid
    d = json.loads(raw)

    def pos(v: object) -> tuple[int, int, int | None] | None:
        if not isinstance(v, dict):
            return None
        x, y, z = v.get("x"), v.get("y"), v.get("z")
        if type(x) is not int or type(y) is not int or (z is not None and type(z) is not int):
            return None
        return x, y, z

    assert m.from_pos == pos(d.get("from")) and m.to_pos == pos(d.get("to"))
    assert m.capture_target == pos(d.get("captureTarget"))
    t = d.get("type")
    assert m.move_type == (t if isinstance(t, str) else None)
