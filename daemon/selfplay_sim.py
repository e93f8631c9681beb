"""Synthetic self-play writer: real-schema GameReplayDB games for the demo and tests.

Games are written the way upstream writers do (schema v18 by default, WAL, one
transaction per game) with realistic lengths per board, move JSON shaped like
upstream's pydantic ``Move`` (cube coordinates on hex boards), and a share of
active, abandoned and drawn games.

Planted structure, so a trained model can beat chance:

* each seat has a step direction; after its placements, a seat's next move
  starts where its previous move ended and goes ``2 x direction`` most of the
  time (policy is learnable from the recent-move planes);
* the eventual winner places its rings in a home region and captures more often
  (value is learnable from the same planes).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import structlog

from daemon.data.replaydb import connect_writer, create_schema, insert_game
from daemon.keys import BoardGeometry, geometry, parse_config_key

log = structlog.get_logger(__name__)

__all__ = ["GameFactory", "SelfPlaySim", "connect_writer", "create_schema", "insert_game", "write_games"]

SQUARE_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1))
HEX_DIRS = ((1, -1, 0), (1, 0, -1), (0, 1, -1), (-1, 1, 0), (-1, 0, 1), (0, -1, 1))
PLACEMENTS_PER_SEAT = 2


def _pos(g: BoardGeometry, cell: tuple[int, int, int | None]) -> dict[str, int | None]:
    return {"x": cell[0], "y": cell[1], "z": cell[2]}


def _step(
    g: BoardGeometry, cell: tuple[int, int, int | None], d: Sequence[int], k: int
) -> tuple[int, int, int | None] | None:
    if g.is_hex:
        x, y, z = cell[0] + k * d[0], cell[1] + k * d[1], (cell[2] or 0) + k * d[2]
        return (x, y, z) if g.to_grid(x, y, z) is not None else None
    x, y = cell[0] + k * d[0], cell[1] + k * d[1]
    return (x, y, None) if g.to_grid(x, y) is not None else None


@dataclass
class _Seat:
    direction: Sequence[int]
    last_to: tuple[int, int, int | None] | None = None


class GameFactory:
    """Builds one synthetic game (rows for every table) from a seeded RNG."""

    def __init__(self, config_key: str, seed: int = 0, *, source: str = "selfplay") -> None:
        self.board, self.num_players = parse_config_key(config_key)
        self.geo = geometry(self.board)
        # Seeded per config too: two configs with the same seed must not share game ids.
        self.rng = random.Random(f"{config_key}:{seed}")
        self.source = source
        self.cells = [
            self.geo.from_grid(int(r), int(c)) for r, c in zip(*self.geo.mask.nonzero(), strict=True)
        ]
        self.home = [self._home_cells(seat) for seat in range(1, self.num_players + 1)]

    def _home_cells(self, seat: int) -> list[tuple[int, int, int | None]]:
        # Quadrant (square) or sector (hex) of the grid, by seat.
        half = self.geo.grid / 2
        out = []
        for cell in self.cells:
            rc = self.geo.to_grid(cell[0], cell[1], cell[2])
            assert rc is not None
            quadrant = (1 if rc[0] >= half else 0) * 2 + (1 if rc[1] >= half else 0)
            if quadrant == (seat - 1) % 4:
                out.append(cell)
        return out or self.cells

    def _move(
        self, n: int, seat: int, phase: str, mtype: str, frm: Any, to: Any, now: datetime, capture: Any = None
    ) -> dict[str, Any]:
        g = self.geo
        return {
            "id": f"sim-{n}",
            "type": mtype,
            "player": seat,
            "from": _pos(g, frm) if frm is not None else None,
            "to": _pos(g, to) if to is not None else None,
            "captureTarget": _pos(g, capture) if capture is not None else None,
            "capturedStacks": None,
            "captureChain": None,
            "overtakenRings": None,
            "placedOnStack": False if mtype == "place_ring" else None,
            "placementCount": 1 if mtype == "place_ring" else None,
            "stackMoved": None,
            "formedLines": None,
            "collapsedMarkers": None,
            "claimedTerritory": None,
            "disconnectedRegions": None,
            "eliminatedRings": None,
            "timestamp": now.isoformat(),
            "thinkTime": 0,
            "moveNumber": n + 1,
        }

    def make(
        self,
        status: str = "completed",
        draw: bool = False,
        now: datetime | None = None,
        *,
        order: Sequence[int] | None = None,
        profiles: dict[int, str] | None = None,
    ) -> dict[str, Any]:
        """One game as table rows: ``{"game": {...}, "players": [...], "moves": [...], "initial": str}``.

        ``order`` forces the final ranking (seats, best first); ``profiles`` names the model on a
        seat (``game_players.ai_profile_id``), as evaluation games do.
        """
        rng, g, n_players = self.rng, self.geo, self.num_players
        now = now or datetime.now(UTC)
        winner = None if draw or status != "completed" else rng.randint(1, n_players)
        if order is not None and winner is not None:
            winner = order[0]
        dirs: Sequence[Sequence[int]] = HEX_DIRS if g.is_hex else SQUARE_DIRS
        seats = {
            s: _Seat(direction=dirs[(s * 2 + rng.randint(0, 1)) % len(dirs)]) for s in range(1, n_players + 1)
        }
        length = max(n_players * 3, int(g.moves_per_game * rng.uniform(0.7, 1.3)))
        if status in ("active", "abandoned"):
            length = max(n_players, length // rng.randint(2, 4))
        moves: list[tuple[int, int, int, str, str, bytes]] = []
        turn = 0
        n = 0
        while n < length:
            seat = turn % n_players + 1
            st = seats[seat]
            if turn < n_players * PLACEMENTS_PER_SEAT:
                pool = self.home[seat - 1] if seat == winner and rng.random() < 0.8 else self.cells
                to = rng.choice(pool)
                mv = self._move(n, seat, "ring_placement", "place_ring", None, to, now)
                st.last_to = to
                phase, mtype = "ring_placement", "place_ring"
            else:
                frm = st.last_to if st.last_to is not None and rng.random() < 0.9 else rng.choice(self.cells)
                to = None
                for d, k in ((st.direction, 2), (st.direction, 1)):
                    to = _step(g, frm, d, k)
                    if to is not None:
                        break
                if to is None:  # bounce off the edge: reverse this seat's direction
                    st.direction = tuple(-c for c in st.direction)
                    to = _step(g, frm, st.direction, 1) or frm
                capture_p = 0.4 if seat == winner else 0.15
                if rng.random() < capture_p:
                    phase, mtype = "capture", "overtaking_capture"
                    mv = self._move(n, seat, phase, mtype, frm, to, now, capture=frm)
                else:
                    phase, mtype = "movement", "move_stack"
                    mv = self._move(n, seat, phase, mtype, frm, to, now)
                st.last_to = to
            moves.append((n, turn, seat, phase, mtype, orjson.dumps(mv)))
            n += 1
            # Bookkeeping moves, as upstream records them after a movement.
            if mtype != "place_ring" and n < length and rng.random() < 0.25:
                bk = self._move(
                    n, seat, "line_processing", "no_line_action", None, (0, 0, 0 if g.is_hex else None), now
                )
                moves.append((n, turn, seat, "line_processing", "no_line_action", orjson.dumps(bk)))
                n += 1
            turn += 1
        game_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if order is None:
            order = list(range(1, n_players + 1))
            rng.shuffle(order)
            if winner is not None:
                order.remove(winner)
                order.insert(0, winner)
        named = profiles or {}
        players = [  # territory and rings fall with the rank, so the ranking can be read back
            (game_id, seat, "ai", "descent", 5, named.get(seat), 20 - 4 * rank, 30 - 7 * rank, rank)
            for rank, seat in enumerate(order)
        ]
        initial = orjson.dumps(
            {
                "id": "self-play",
                "boardType": self.board,
                "board": {"type": self.board, "size": g.grid},
                "players": [{"playerNumber": s, "type": "ai"} for s in range(1, n_players + 1)],
                "currentPhase": "ring_placement",
                "currentPlayer": 1,
                "gameStatus": "active",
                "maxPlayers": n_players,
            }
        ).decode()
        game_status = status
        return {
            "game": {
                "game_id": game_id,
                "board_type": self.board,
                "num_players": n_players,
                "created_at": (now - timedelta(seconds=length)).isoformat(),
                "completed_at": now.isoformat() if status == "completed" else None,
                "game_status": game_status,
                "winner": winner,
                "termination_reason": f"status:{game_status}",
                "total_moves": len(moves),
                "total_turns": turn,
                "source": self.source,
                "metadata_json": orjson.dumps(
                    {"engine_mode": "descent-only", "source": self.source}
                ).decode(),
            },
            "players": players,
            "moves": moves,
            "initial": initial,
        }


def _fresh_seed(conn: sqlite3.Connection, seed: int) -> int:
    """``seed`` for an empty DB; shifted by the rows already there, so a restarted writer
    with the same seed continues with new game ids instead of colliding with its own."""
    existing = int(conn.execute("SELECT coalesce(max(rowid), 0) FROM games").fetchone()[0])
    return seed if existing == 0 else seed ^ (existing << 32)


def _status_for(rng: random.Random, active: float, abandoned: float, draw: float) -> tuple[str, bool]:
    r = rng.random()
    if r < active:
        return "active", False
    if r < active + abandoned:
        return "abandoned", False
    if r < active + abandoned + draw:
        return "completed", True
    return "completed", False


def write_games(
    db_path: Path,
    config_key: str,
    n_games: int,
    *,
    seed: int = 0,
    active_share: float = 0.05,
    abandoned_share: float = 0.03,
    draw_share: float = 0.02,
    schema_version: int = 18,
    source: str = "selfplay",
) -> int:
    """Write ``n_games`` games for ``config_key`` into ``db_path``; return how many were usable."""
    usable = 0
    conn = connect_writer(db_path, schema_version)
    try:
        factory = GameFactory(config_key, _fresh_seed(conn, seed), source=source)
        for _ in range(n_games):
            status, draw = _status_for(factory.rng, active_share, abandoned_share, draw_share)
            insert_game(conn, factory.make(status, draw), schema_version)
            usable += status == "completed" and not draw
    finally:
        conn.close()
    return usable


def evaluation_order(rng: random.Random, strengths: Sequence[float]) -> list[int]:
    """A final ranking (seats 1..n, best first) drawn by Plackett-Luce from seat strengths.

    With strengths ``10 ** (elo / 400)`` the chance that one seat finishes ahead of another is
    the logistic Elo curve of their difference, whatever the other seats: the model the
    promotion test assumes for 2, 3 and 4 players.
    """
    left = list(range(1, len(strengths) + 1))
    order: list[int] = []
    while left:
        pick = rng.choices(left, weights=[strengths[s - 1] for s in left])[0]
        order.append(pick)
        left.remove(pick)
    return order


def write_evaluation_games(
    db_path: Path,
    config_key: str,
    n_games: int,
    *,
    candidate: str,
    production: str,
    elo_diff: float,
    seed: int = 0,
    source: str = "evaluation",
) -> int:
    """Write ``n_games`` finished evaluation games seating ``candidate`` and ``production``.

    The candidate is ``elo_diff`` Elo stronger than production (negative: weaker); in 3-4 player
    games the other seats are baseline players as strong as production. Seats rotate, so each
    model plays every seat. Returns the games the candidate finished ahead of production.
    """
    conn = connect_writer(db_path)
    ahead = 0
    try:
        factory = GameFactory(config_key, _fresh_seed(conn, seed), source=source)
        n = factory.num_players
        for i in range(n_games):
            cand, prod = i % n + 1, (i + 1) % n + 1
            strengths = [1.0] * n
            strengths[cand - 1] = 10 ** (elo_diff / 400)
            order = evaluation_order(factory.rng, strengths)
            profiles = {s: "baseline" for s in range(1, n + 1)} | {cand: candidate, prod: production}
            insert_game(conn, factory.make(order=order, profiles=profiles))
            ahead += order.index(cand) < order.index(prod)
    finally:
        conn.close()
    return ahead


class SelfPlaySim:
    """Writes games for several configs at a steady rate until stopped (the demo's data source)."""

    def __init__(self, db_path: Path, config_keys: Sequence[str], rate: float, *, seed: int = 0) -> None:
        self.db_path = db_path
        self.config_keys = list(config_keys)
        self.rate = rate
        self.seed = seed
        self.written = 0

    async def run(self, stop: asyncio.Event, max_games: int | None = None) -> int:
        """Write about ``rate`` games/s (round-robin over configs) until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        conn = await asyncio.to_thread(connect_writer, self.db_path)
        log.info("selfplay.started", db=str(self.db_path), configs=self.config_keys, rate=self.rate)
        try:
            seed = await asyncio.to_thread(_fresh_seed, conn, self.seed)
            factories = [GameFactory(k, seed) for k in self.config_keys]
            start = loop.time()
            while not stop.is_set() and (max_games is None or self.written < max_games):
                f = factories[self.written % len(factories)]
                status, draw = _status_for(f.rng, 0.05, 0.03, 0.02)
                await asyncio.to_thread(insert_game, conn, f.make(status, draw))
                self.written += 1
                delay = start + self.written / self.rate - loop.time()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=delay)
                    except TimeoutError:
                        pass
        finally:
            await asyncio.to_thread(conn.close)
            log.info("selfplay.stopped", written=self.written)
        return self.written
