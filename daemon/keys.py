"""Config keys (``{board}_{n}p``) and board geometry.

Every key that enters the system (CLI, YAML, HTTP, lock names, file names) goes
through :func:`validate_config_key`, so a path like ``../../x_2p`` can never
reach the file system.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

BOARDS: tuple[str, ...] = ("square8", "square19", "hex8", "hexagonal")
PLAYER_COUNTS: tuple[int, ...] = (2, 3, 4)
CONFIG_KEY_RE = re.compile(r"^(square8|square19|hex8|hexagonal)_[234]p$")

# Names used by older self-play writers.
BOARD_ALIASES: dict[str, str] = {
    "square8": "square8",
    "sq8": "square8",
    "square19": "square19",
    "sq19": "square19",
    "hex8": "hex8",
    "hexagonal": "hexagonal",
    "hex": "hexagonal",
}

ALL_CONFIG_KEYS: tuple[str, ...] = tuple(f"{b}_{n}p" for b in BOARDS for n in PLAYER_COUNTS)


class InvalidConfigKey(ValueError):
    """A config key that does not match ``^(square8|square19|hex8|hexagonal)_[234]p$``."""

    def __init__(self, key: object) -> None:
        self.key = key
        super().__init__(
            f"invalid config key {key!r}: expected {{board}}_{{n}}p with board in "
            f"{'|'.join(BOARDS)} and n in 2..4 (e.g. square8_2p)"
        )


def validate_config_key(key: object) -> str:
    """Return ``key`` unchanged if valid, else raise :class:`InvalidConfigKey`."""
    if not isinstance(key, str) or not CONFIG_KEY_RE.fullmatch(key):
        raise InvalidConfigKey(key)
    return key


def parse_config_key(key: str) -> tuple[str, int]:
    """``"hex8_3p"`` -> ``("hex8", 3)``."""
    validate_config_key(key)
    board, players = key.rsplit("_", 1)
    return board, int(players[:-1])


def make_config_key(board: str, num_players: int) -> str:
    """Build and validate a key from a board name (aliases allowed) and a player count."""
    return validate_config_key(f"{normalize_board(board)}_{num_players}p")


# What normalisation strips around a board name: ASCII whitespace, exactly what SQL's trim() is told to.
BOARD_SPACE = " \t\n\r\f\v"


def normalize_board(name: str) -> str:
    """Canonical board name for ``name`` (legacy aliases, any case, ASCII whitespace around it).

    The one normalisation of a board name: the poll counts with it and the export selects
    with it. ASCII only, so SQLite can apply exactly the same rule (:func:`board_sql`).
    """
    if isinstance(name, str) and name.isascii():
        canonical = BOARD_ALIASES.get(name.strip(BOARD_SPACE).lower())
        if canonical is not None:
            return canonical
    raise ValueError(f"unknown board type {name!r}: expected one of {', '.join(BOARDS)}")


def board_sql(column: str) -> str:
    """SQL for :func:`normalize_board` of ``column`` before the alias lookup: ``<sql> IN (aliases)``.

    On ASCII text it is the same rule (ASCII lower case, :data:`BOARD_SPACE` trimmed); any
    other text keeps a non-ASCII character, so it matches no alias, as in Python.
    """
    codes = ",".join(str(ord(c)) for c in BOARD_SPACE)
    return f"lower(trim({column}, char({codes})))"


def board_aliases(board: str) -> tuple[str, ...]:
    """Every spelling of ``board`` a database may contain (``square8`` -> ``square8, sq8``)."""
    canonical = normalize_board(board)
    return tuple(sorted(a for a, c in BOARD_ALIASES.items() if c == canonical))


@dataclass(frozen=True)
class BoardGeometry:
    """Cells of a board embedded in a square ``grid x grid`` array.

    Square boards use ``(x, y)`` = (column, row). Hex boards use cube coordinates
    ``(x, y, z)`` with ``x + y + z == 0`` and ``max(|x|, |y|, |z|) <= radius``,
    embedded at ``row = z + radius``, ``col = x + radius``.
    """

    board: str
    grid: int
    is_hex: bool
    radius: int
    moves_per_game: int
    sample_factor: float

    @cached_property
    def mask(self) -> npt.NDArray[np.bool_]:
        """``grid x grid`` boolean mask of the cells that exist on the board."""
        if not self.is_hex:
            return np.ones((self.grid, self.grid), dtype=np.bool_)
        r = self.radius
        z, x = np.mgrid[-r : r + 1, -r : r + 1]
        y = -x - z
        return np.asarray(np.maximum(np.abs(y), np.maximum(np.abs(x), np.abs(z))) <= r)

    @property
    def cells(self) -> int:
        return int(self.mask.sum())

    def to_grid(self, x: int, y: int, z: int | None = None) -> tuple[int, int] | None:
        """(row, col) of a board position, or ``None`` when it is off the board."""
        if self.is_hex:
            r = self.radius
            if z is None:
                z = -x - y
            if x + y + z != 0 or max(abs(x), abs(y), abs(z)) > r:
                return None
            return z + r, x + r
        if 0 <= x < self.grid and 0 <= y < self.grid:
            return y, x
        return None

    def from_grid(self, row: int, col: int) -> tuple[int, int, int | None]:
        """Inverse of :meth:`to_grid`: board coordinates of a grid cell."""
        if self.is_hex:
            r = self.radius
            x, z = col - r, row - r
            return x, -x - z, z
        return col, row, None


GEOMETRY: dict[str, BoardGeometry] = {
    "square8": BoardGeometry("square8", 8, False, 0, 60, 1.0),
    "square19": BoardGeometry("square19", 19, False, 0, 200, 1.5),
    "hex8": BoardGeometry("hex8", 9, True, 4, 40, 0.8),
    "hexagonal": BoardGeometry("hexagonal", 25, True, 12, 80, 1.2),
}


def geometry(board: str) -> BoardGeometry:
    """Geometry of a board (aliases allowed)."""
    return GEOMETRY[normalize_board(board)]
