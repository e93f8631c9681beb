"""Config keys and board geometry."""

from __future__ import annotations

import pytest

from daemon.keys import (
    ALL_CONFIG_KEYS,
    BOARDS,
    InvalidConfigKey,
    board_aliases,
    geometry,
    make_config_key,
    normalize_board,
    parse_config_key,
    validate_config_key,
)


def test_all_keys() -> None:
    assert len(ALL_CONFIG_KEYS) == 12
    for key in ALL_CONFIG_KEYS:
        assert validate_config_key(key) == key
        board, n = parse_config_key(key)
        assert make_config_key(board, n) == key


@pytest.mark.parametrize(
    "bad",
    [
        "../../x_2p",
        "square8_5p",
        "",
        "square8_1p",
        "square8",
        "sq8_2p",
        "Square8_2p",
        "square8_2p\n",
        " square8_2p",
        "hex8_2p/../../etc",
        "square8_2P",
        None,
        3,
    ],
)
def test_invalid_keys_refused(bad: object) -> None:
    with pytest.raises(InvalidConfigKey) as info:
        validate_config_key(bad)
    assert repr(bad) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_aliases() -> None:
    assert normalize_board("sq8") == "square8"
    assert normalize_board("SQ19") == "square19"
    assert normalize_board("hex") == "hexagonal"
    assert normalize_board("hex8") == "hex8"
    assert make_config_key("sq8", 3) == "square8_3p"
    assert board_aliases("square8") == ("sq8", "square8")
    assert board_aliases("hexagonal") == ("hex", "hexagonal")
    with pytest.raises(ValueError, match="unknown board"):
        normalize_board("chess")
    with pytest.raises(InvalidConfigKey):
        make_config_key("square8", 5)


@pytest.mark.parametrize(
    ("board", "grid", "cells"),
    [("square8", 8, 64), ("square19", 19, 361), ("hex8", 9, 61), ("hexagonal", 25, 469)],
)
def test_geometry_and_round_trip(board: str, grid: int, cells: int) -> None:
    g = geometry(board)
    assert g.grid == grid and g.mask.shape == (grid, grid) and g.cells == cells
    seen = set()
    for row in range(grid):
        for col in range(grid):
            pos = g.from_grid(row, col)
            back = g.to_grid(*pos)
            if g.mask[row, col]:
                assert back == (row, col), (board, row, col, pos)
                seen.add(pos)
                if g.is_hex:
                    x, y, z = pos
                    assert z is not None and x + y + z == 0 and max(abs(x), abs(y), abs(z)) <= g.radius
            else:
                assert back is None
    assert len(seen) == cells
    # Off-board positions.
    if g.is_hex:
        assert g.to_grid(g.radius + 1, -(g.radius + 1), 0) is None
        assert g.to_grid(1, 1, 1) is None  # not a cube coordinate
        assert g.to_grid(1, -1) == g.to_grid(1, -1, 0)
    else:
        assert g.to_grid(-1, 0) is None and g.to_grid(0, grid) is None


def test_geometry_aliases() -> None:
    assert geometry("hex") is geometry("hexagonal")
    assert geometry("sq8").board == "square8"
    assert set(BOARDS) == {"square8", "square19", "hex8", "hexagonal"}
