"""The one rule for a ``games`` row: its config and whether it is usable (DESIGN 2).

The poll counts with :func:`classify_row` and the export applies it again to every row
its SQL prefilter (:func:`usable_sql`) returns, so the two agree exactly whatever a foreign
writer stored. Values come as SQLite stored them: game-database connections fetch text as
``bytes`` (an invalid UTF-8 byte is data to skip, never an exception), and a column may hold
any storage class whatever its declared type. Strict on types: a player count or a winner
is an INTEGER, nothing else.
"""

from __future__ import annotations

from typing import Any

from daemon.keys import PLAYER_COUNTS, board_sql, make_config_key

USABLE_STATUSES = frozenset({"completed", "finished"})
PENDING_STATUSES = frozenset({"active", "in_progress", "paused", "waiting"})
# Kinds of a row that is not usable (SkipCounts fields) besides "usable".
UNDECODABLE = "undecodable"  # status text that is not UTF-8
BAD_WINNER = "bad_winner"  # a winner that is not an integer
_MEMO_LIMIT = 4096  # distinct (board, players) / (status, winner type) pairs remembered


def text(value: Any) -> str | None:
    """A text column's value as ``str`` (invalid UTF-8 replaced), whatever its storage class."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def as_int(value: Any) -> int | None:
    """An INTEGER value, else None (a REAL, text or blob where an integer belongs)."""
    return value if type(value) is int else None


_KEYS: dict[tuple[Any, Any], str | None] = {}
_KINDS: dict[tuple[Any, bool | None], str] = {}


def config_of(board: Any, players: Any) -> str | None:
    """The config key of a row's ``(board_type, num_players)``, or None when it names none."""
    ck = (board, players)
    try:
        return _KEYS[ck]  # memoised: runs for every new row, and distinct values are few
    except KeyError:
        pass
    except TypeError:  # an unhashable value (never from SQLite)
        return None
    key = None
    name = board.decode("utf-8", "replace") if isinstance(board, bytes) else board
    if isinstance(name, str) and type(players) is int and players in PLAYER_COUNTS:
        try:
            key = make_config_key(name, players)
        except ValueError:
            key = None
    if len(_KEYS) < _MEMO_LIMIT:
        _KEYS[ck] = key
    return key


def classify(status: Any, winner: Any) -> str:
    """``usable`` or the reason a row of a known config is not (a :class:`SkipCounts` field)."""
    ck = (status, type(winner) is int if winner is not None else None)
    try:
        return _KINDS[ck]
    except KeyError:
        pass
    except TypeError:
        return "other"
    kind = _classify(status, ck[1])
    if len(_KINDS) < _MEMO_LIMIT:
        _KINDS[ck] = kind
    return kind


def _classify(status: Any, winner_is_int: bool | None) -> str:
    if isinstance(status, bytes):
        try:
            status = status.decode("utf-8")
        except UnicodeDecodeError:
            return UNDECODABLE
    s = status.lower() if isinstance(status, str) and status.isascii() else ""
    if s in USABLE_STATUSES:
        if winner_is_int is None:
            return "no_winner"
        return "usable" if winner_is_int else BAD_WINNER
    if s in PENDING_STATUSES:
        return "active"
    if s == "abandoned":
        return "abandoned"
    return "other"


def classify_row(board: Any, players: Any, status: Any, winner: Any) -> tuple[str | None, str]:
    """``(config key or None, kind)`` of one ``games`` row; kind ``other`` when it has no config."""
    key = config_of(board, players)
    return key, (classify(status, winner) if key else "other")


def usable_sql(aliases: tuple[str, ...]) -> str:
    """WHERE terms selecting a superset of the usable rows of a board (``?`` = aliases, then n).

    A prefilter only: it is the same rule as :func:`classify_row` on well-typed rows, and
    the reader applies :func:`classify_row` to every row it returns.
    """
    marks = ",".join("?" * len(aliases))
    statuses = ",".join(f"'{s}'" for s in sorted(USABLE_STATUSES))
    return (
        f"{board_sql('board_type')} IN ({marks}) AND num_players = ?"
        f" AND lower(game_status) IN ({statuses}) AND winner IS NOT NULL"
    )
