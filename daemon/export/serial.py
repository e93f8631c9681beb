"""The serial export: usable games newest first across sources, encoded in blocks of moves."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Generator, Iterator, Mapping, Sequence
from pathlib import Path

from daemon.data.gamedb import Game, GameDB, SourceSnapshot
from daemon.export.encoder import EncodedGame, Encoder
from daemon.export.workers import defects_of, export_sources

# Games are encoded in blocks of about this many moves: one numpy pass per block
# instead of one per game, while a block's arrays stay small (hexagonal: ~20 MB).
BLOCK_MOVES = 4096
BLOCK_GAMES = 256
# The game ids of one encoded block, its rows, and the source rows the reader could not use.
Rows = tuple[list[str], EncodedGame, dict[str, int]]


def newest_games(
    db_paths: Sequence[Path], snapshots: Mapping[str, SourceSnapshot], key: str, max_games: int | None
) -> Iterator[Game]:
    """Usable games of exactly the snapshot, newest first across sources, at most ``max_games``."""
    iters: list[Iterator[Game]] = [
        # Only the snapshot's file: one renamed over the path since then is refused.
        GameDB(Path(path)).iter_games(
            key, upto_rowid=watermark, newest_first=True, limit=max_games, identity=identity
        )
        for path, watermark, identity in export_sources(db_paths, snapshots, key)
    ]
    try:
        merged = (
            iters[0]
            if len(iters) == 1
            else heapq.merge(*iters, key=lambda g: (g.created_at or "", g.rowid), reverse=True)
        )
        yield from itertools.islice(merged, max_games)
    finally:
        for it in iters:  # close each source's read connection now, even when stopping early
            close = getattr(it, "close", None)
            if close is not None:
                close()


def serial_rows(games: Iterator[Game], encoder: Encoder, sample_every: int) -> Generator[Rows]:
    """Encode in this process: blocks of about ``BLOCK_MOVES`` moves (or one game per call)."""
    encode_games = getattr(encoder, "encode_games", None)
    block: list[Game] = []
    block_moves = 0
    for game in games:
        if encode_games is None:
            yield [game.game_id], encoder.encode_game(game, sample_every), game.defects
            continue
        block.append(game)
        block_moves += len(game.moves)
        if block_moves >= BLOCK_MOVES or len(block) >= BLOCK_GAMES:
            yield [g.game_id for g in block], encode_games(block, sample_every), defects_of(block)
            block, block_moves = [], 0
    if block and encode_games is not None:
        yield [g.game_id for g in block], encode_games(block, sample_every), defects_of(block)
