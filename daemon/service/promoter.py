"""Promotion by evidence, run on every poll tick (DESIGN 12).

Per config: the challenger is the newest ready ``candidate``, tested against the config's
``production`` model on the evaluation games that seat both (each game counted once, the
counts and the counted ids stored together in ``decide.db``, so a restart resumes the test).
Every node computes the same test from the same databases; only the node that holds the
config's lease acts, with that lease's fencing token, so exactly one node decides and the
registry refuses a stale decider. Accept promotes (the previous production is archived),
reject marks the candidate ``rejected``; the test's numbers go into the stage history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import structlog

from daemon.data.errors import GameDBError
from daemon.data.games import Game
from daemon.data.sources import GameSources
from daemon.decide.ingest import SeatMapping, model_seat
from daemon.decide.promotion import (
    PromotionDecision,
    PromotionParams,
    PromotionState,
    decide_all,
    pairwise_outcome,
    status_line,
)
from daemon.decide.store import DecideStore
from daemon.locks.factory import LockFactory
from daemon.registry.records import FencingTokenRejected, RegistryError
from daemon.registry.registry import ModelRegistry
from daemon.service.metrics import Metrics
from daemon.service.view import ServiceView
from daemon.settings import PromotionSettings

log = structlog.get_logger(__name__)
Watermarks = dict[tuple[str, str], int]


@dataclass(frozen=True)
class Test:
    """One open test and what :func:`decide_all` says of it now."""

    state: PromotionState
    decision: PromotionDecision

    def as_dict(self) -> dict[str, Any]:
        s, d = self.state, self.decision
        return {
            "candidate": s.candidate,
            "production": s.production,
            **d.as_dict(),
            "line": status_line(s, d),
        }


def outcome(game: Game, candidate: str, production: str, mapping: SeatMapping) -> int | None:
    """The candidate's result against production in ``game``, or None when it does not seat both."""
    cand, prod = model_seat(game, candidate, mapping), model_seat(game, production, mapping)
    if cand is None or prod is None or cand == prod or not game.ranking:
        return None
    ranks = {seat: i for i, seat in enumerate(game.ranking)}
    if cand not in ranks or prod not in ranks:
        return None
    return pairwise_outcome(ranks, cand, prod)


class Promoter:
    def __init__(
        self,
        *,
        configs: Sequence[str],
        settings: PromotionSettings,
        evaluation_sources: Sequence[str],
        models: ModelRegistry,
        sources: GameSources,
        store: DecideStore,
        locks: LockFactory,
        metrics: Metrics,
    ) -> None:
        self.configs = list(configs)
        self.params = PromotionParams.from_settings(settings)
        self.evaluation_sources = tuple(evaluation_sources)
        self.models = models
        self.sources = sources
        self.store = store
        self.locks = locks
        self.metrics = metrics
        self.mapping = SeatMapping()
        self.tests: dict[str, Test] = {}
        self._marks: Watermarks = {}

    # -- evidence (blocking: run in a thread) ----------------------------------------
    def update(self, now: datetime) -> dict[str, Test]:
        """Bring every config's test up to date with the registry and the new games."""
        states: dict[str, PromotionState] = {}
        for key in self.configs:
            state = self._current(key, now)
            if state is not None:
                states[key] = self._count(state)
        decisions = decide_all(states, self.params, now)
        self.tests = {key: Test(states[key], decisions[key]) for key in states}
        return self.tests

    def _current(self, key: str, now: datetime) -> PromotionState | None:
        """The open test of ``key``: the stored one while its pair is unchanged, else a new one."""
        challenger = self.models.get_latest(key, stage="candidate")
        if challenger is None:
            return None
        prod = self.models.get_production(key)
        production = prod.model_id if prod is not None and prod.status == "ready" else None
        raw = self.store.states("promotion_state").get(key)
        stored = PromotionState.from_dict(orjson.loads(raw)) if raw is not None else None
        if stored is not None and (stored.candidate, stored.production) == (challenger.model_id, production):
            return stored
        if stored is not None:
            self.store.end_test(key, stored.candidate)
        fresh = PromotionState.start(key, challenger.model_id, production, now=now)
        self.store.put_state("promotion_state", key, orjson.dumps(fresh.to_dict()).decode())
        return fresh

    def _count(self, state: PromotionState) -> PromotionState:
        if state.production is None:
            return state  # bootstrap: nothing to play against
        key = state.config
        counted = self.store.counted_games(key, state.candidate)
        new: dict[str, int] = {}
        for game in self._new_games(key):
            if game.game_id in counted or game.game_id in new:
                continue
            result = outcome(game, state.candidate, state.production, self.mapping)
            if result is not None:
                new[game.game_id] = result
        if not new:
            return state
        state = state.add_outcomes(new.values())
        self.store.count_games(key, state.candidate, list(new), orjson.dumps(state.to_dict()).decode())
        return state

    def _new_games(self, key: str) -> list[Game]:
        """Evaluation games of ``key`` added since the last tick (every source the poll read)."""
        games: list[Game] = []
        for path in self.sources.paths():
            db = self.sources.db(path)
            snap = db.snapshot
            if snap is None or not snap.ok or key not in snap.configs:
                continue
            mark = (str(path), key)
            top = snap.configs[key].watermark
            try:
                games.extend(
                    db.iter_games(
                        key,
                        min_rowid=self._marks.get(mark, 0),
                        newest_first=False,
                        sources=self.evaluation_sources,
                        upto_rowid=top,
                        identity=snap.identity,  # never a file that replaced the polled one
                    )
                )
            except GameDBError as e:
                log.warning("promotion.read_failed", source=str(path), reason=str(e))
                continue
            self._marks[mark] = top
        return games

    def publish(self, view: ServiceView) -> None:
        """Each config's open test into the view (status, /evaluation) and the gauges."""
        for key, cv in view.configs.items():
            test = self.tests.get(key)
            cv.promotion = test.as_dict() if test is not None else None
            if test is None:
                m = self.metrics
                for gauge in (m.promotion_llr, m.promotion_games, m.promotion_max_games):
                    try:
                        gauge.remove(key)
                    except KeyError:
                        pass
                continue
            self.metrics.promotion_llr.labels(key).set(test.decision.llr)
            self.metrics.promotion_games.labels(key).set(test.decision.games)
            self.metrics.promotion_max_games.labels(key).set(self.params.max_games)

    # -- decisions ---------------------------------------------------------------------
    async def tick(self, now: datetime, view: ServiceView) -> list[tuple[str, str]]:
        """Update every test, act on the decided ones; ``[(config, "accepted"|"rejected")]``."""
        try:
            tests = await asyncio.to_thread(self.update, now)
        except RegistryError as e:  # the evaluator raises registry_unavailable
            log.warning("promotion.update_failed", reason=str(e))
            return []
        self.publish(view)
        done = []
        for key, test in tests.items():
            if test.decision.result != "continue":
                acted = await self._act(key, test)
                if acted is not None:
                    done.append((key, acted))
        return done

    async def _act(self, key: str, test: Test) -> str | None:
        lock = self.locks.make(key, lambda *_: None)
        try:
            if not await lock.acquire_async(timeout=0):
                return None  # a run or another node holds the config: decide on a later tick
        except Exception as e:
            log.warning("promotion.lock_unavailable", config=key, reason=str(e))
            await lock.aclose()
            return None
        try:
            return await asyncio.to_thread(self._apply, key, test, lock.fencing_token)
        except FencingTokenRejected as e:
            log.warning("promotion.fenced", config=key, reason=str(e))
            return None
        except RegistryError as e:
            log.warning("promotion.failed", config=key, reason=str(e))
            return None
        finally:
            await lock.aclose()

    def _apply(self, key: str, test: Test, token: int | None) -> str:
        s, d = test.state, test.decision
        reason = f"{d.decided_by}: {status_line(s, d)}"
        if d.result == "accept":
            why = f"promotion test accepted ({reason})"
            self.models.promote(s.candidate, reason=why, fencing_token=token)
            result = "accepted"
        else:
            self.models.reject(s.candidate, reason=f"promotion test rejected ({reason})", fencing_token=token)
            result = "rejected"
        self.store.end_test(key, s.candidate)
        self.metrics.promotion_decisions.labels(key, result).inc()
        log.info(
            f"promotion.{result}",
            config=key,
            candidate=s.candidate,
            production=s.production,
            decided_by=d.decided_by,
            games=d.games,
            llr=round(d.llr, 3),
            elo=round(d.elo, 1),
            elo_margin=round(d.elo_margin, 1),
            token=token,
        )
        return result
