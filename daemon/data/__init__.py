"""The GameReplayDB read side: snapshots, game records and the set of polled sources.

Read-only, incremental (cost grows with new rows), and every failure a typed
:class:`GameDBError` naming the file.
"""

from daemon.data.errors import (
    CorruptDatabase,
    DatabaseLocked,
    DatabaseMissing,
    DatabaseReplaced,
    GameDBError,
    NotADatabase,
    NotARegularFile,
    SchemaError,
)
from daemon.data.gamedb import GameDB
from daemon.data.games import USABLE_STATUSES, Game, Move, MoveColumns, Player, Pos, parse_move
from daemon.data.snapshot import ConfigSnapshot, SkipCounts, SourceSnapshot
from daemon.data.sources import ConfigTotals, GameSources, PollResult, expand

__all__ = [
    "USABLE_STATUSES",
    "ConfigSnapshot",
    "ConfigTotals",
    "CorruptDatabase",
    "DatabaseLocked",
    "DatabaseMissing",
    "DatabaseReplaced",
    "Game",
    "GameDB",
    "GameDBError",
    "GameSources",
    "Move",
    "MoveColumns",
    "NotADatabase",
    "NotARegularFile",
    "Player",
    "PollResult",
    "Pos",
    "SchemaError",
    "SkipCounts",
    "SourceSnapshot",
    "expand",
    "parse_move",
]
