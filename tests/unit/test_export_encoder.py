"""The built-in move-history encoder and the plug-in protocol."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.data.gamedb import Game, Move
from daemon.export.encoder import (
    MALFORMED,
    EncodedGame,
    EncoderError,
    MoveHistoryEncoder,
    board_layout,
    load_encoder,
)
from daemon.npz import cells_to_dense

SQ = None


def mv(
    n: int,
    seat: int,
    mtype: str,
    frm: tuple[int, int, int | None] | None,
    to: tuple[int, int, int | None] | None,
    cap: tuple[int, int, int | None] | None = None,
    phase: str = "movement",
    valid: bool = True,
) -> Move:
    return Move(n, seat, phase, mtype, frm, to, cap, valid)


def game(
    moves: list[Move], board: str = "square8", n: int = 2, winner: int = 1, ranking: list[int] | None = None
) -> Game:
    return Game("g1", 1, board, n, "completed", winner, None, None, {}, [], moves, ranking)


def test_policy_sizes_per_board() -> None:
    e = MoveHistoryEncoder(4)
    assert [e.policy_size(b) for b in ("square8", "square19", "hex8", "hexagonal")] == [
        3717,
        52711,
        3055,
        68479,
    ]
    assert e.num_planes == 65 and MoveHistoryEncoder(2).num_planes == 33 and e.num_globals == 17


def test_square_game_planes_policy_values() -> None:
    moves = [
        mv(0, 1, "place_ring", None, (2, 3, SQ), phase="ring_placement"),
        mv(1, 2, "place_ring", None, (5, 5, SQ), phase="ring_placement"),
        mv(2, 1, "move_stack", (2, 3, SQ), (4, 5, SQ)),
        mv(3, 2, "overtaking_capture", (5, 5, SQ), (5, 1, SQ), cap=(5, 3, SQ), phase="capture"),
        mv(4, 1, "no_line_action", None, (0, 0, SQ), phase="line_processing"),
    ]
    e = MoveHistoryEncoder(2)
    out = e.encode_game(game(moves))
    assert out.n == 5 and not out.skipped
    b = board_layout("square8")
    # placement at (x=2, y=3) -> cell row 3, col 2
    assert out.policy_index[0] == 3 * 8 + 2
    # movement (2,3)->(4,5): direction (+1,+1) = index 4, distance 2
    assert out.policy_index[2] == 64 + ((3 * 8 + 2) * 8 + 4) * 7 + 1
    assert out.policy_index[4] == 2 * 64 + 64 * 8 * 7 + 2  # pass: no_line_action
    assert out.policy_index.max() < b.policy_size
    assert out.features.shape == (5, 33) and out.features.dtype == np.int16  # one cell index per plane
    f = cells_to_dense(out.features, e.feature_constant("square8"))
    # sample 2 (seat 1 to move): own last move (h=0) was the placement at row 3 col 2
    assert f[2, 0, 3, 2] == 1 and f[2].sum() == 2 + 64  # own placement, opponent's placement, mask
    # sample 4 (seat 1): own last = movement from (3,2) to (5,4); opponent (slot 1) captured over (3,5)
    hl = 2
    assert f[4, 1, 3, 2] == 1 and f[4, 2, 5, 4] == 1
    opp = (1 * hl + 0) * 4
    assert f[4, opp + 1, 5, 5] == 1 and f[4, opp + 2, 1, 5] == 1 and f[4, opp + 3, 3, 5] == 1
    assert np.all(f[:, -1] == 1)
    assert out.player_to_move.tolist() == [1, 2, 1, 2, 1]
    assert out.values.tolist() == [1, -1, 1, -1, 1]
    assert out.values_mp[0].tolist() == [1, -1, 0, 0]
    g = out.globals
    assert g[0, 1] == 1 and g[1, 2] == 1 and g[0, 5] == 1  # mover one-hot, 2 players
    assert g[0, 8] == 1 and g[3, 10] == 1 and g[4, 12] == 1  # phases
    # deterministic
    again = e.encode_game(game(moves))
    assert np.array_equal(again.features, out.features) and np.array_equal(again.globals, out.globals)


def test_sample_every_and_malformed_moves_are_skipped_and_counted() -> None:
    moves = [
        mv(0, 1, "place_ring", None, (9, 9, SQ)),  # off board
        mv(1, 2, "move_stack", (0, 0, SQ), (1, 2, SQ)),  # not a ray
        mv(2, 1, "move_stack", None, None, valid=False),  # unparseable JSON
        mv(3, 7, "place_ring", None, (1, 1, SQ)),  # seat out of range
        mv(4, 1, "place_ring", None, (1, 1, SQ)),
    ]
    out = MoveHistoryEncoder(4).encode_game(game(moves))
    assert out.n == 1 and out.skipped == {MALFORMED: 4}
    out = MoveHistoryEncoder(4).encode_game(game(moves), sample_every=2)
    assert out.n == 1 and out.skipped == {MALFORMED: 2} and out.move_numbers.tolist() == [4]


def test_rank_aware_values_for_three_and_four_players() -> None:
    e = MoveHistoryEncoder(1)
    three = game([mv(0, 1, "place_ring", None, (0, 0, SQ))], n=3, winner=3, ranking=[3, 1, 2])
    assert e.values_for(three).tolist() == [0.0, -1.0, 1.0, 0.0]
    four = game([], n=4, winner=2, ranking=[2, 4, 1, 3])
    assert np.allclose(e.values_for(four), [-1 / 3, 1.0, -1.0, 1 / 3])
    no_rank = game([], n=3, winner=2)
    assert e.values_for(no_rank).tolist() == [-0.5, 1.0, -0.5, 0.0]


def test_hex_board_cube_coordinates() -> None:
    moves = [
        mv(0, 1, "place_ring", None, (0, 0, 0), phase="ring_placement"),
        mv(1, 2, "place_ring", None, (4, -4, 0), phase="ring_placement"),
        mv(2, 1, "move_stack", (0, 0, 0), (2, -2, 0)),  # along (+1, -1, 0)
        mv(3, 2, "move_stack", (4, -4, 0), (5, -5, 0)),  # off a radius-4 board
        mv(4, 1, "move_stack", (2, -2, 0), (3, -1, -2)),  # not a straight line
    ]
    out = MoveHistoryEncoder(4).encode_game(game(moves, board="hex8"))
    assert out.features.shape == (3, 65) and out.skipped == {MALFORMED: 2}
    b = board_layout("hex8")
    centre = int(b.ordinal[4 * 9 + 4])
    assert out.policy_index[0] == centre
    assert out.policy_index[2] == b.cells + (centre * 6 + 0) * 8 + 1
    const = MoveHistoryEncoder(4).feature_constant("hex8")
    assert const.shape == (65, 9, 9) and const[-1].sum() == 61 and not const[:-1].any()
    assert cells_to_dense(out.features, const)[0, -1].sum() == 61


class NotAnEncoder:
    def __init__(self, history_length: int) -> None:
        self.name = "x"


class CustomEncoder(MoveHistoryEncoder):
    name = "custom"
    version = 7


def test_load_encoder_plugins() -> None:
    assert isinstance(load_encoder("builtin", 3), MoveHistoryEncoder)
    custom = load_encoder(f"{__name__}:CustomEncoder", 3)
    assert custom.name == "custom" and custom.version == 7
    with pytest.raises(EncoderError, match="cannot import module"):
        load_encoder("no_such_pkg.mod:Enc", 4)
    with pytest.raises(EncoderError, match="has no class"):
        load_encoder(f"{__name__}:Missing", 4)
    with pytest.raises(EncoderError, match=r"does not implement the encoder protocol.*version"):
        load_encoder(f"{__name__}:NotAnEncoder", 4)
    with pytest.raises(EncoderError, match="expected 'builtin'"):
        load_encoder("nocolon", 4)
    assert EncodedGame  # re-exported type used by plug-ins
