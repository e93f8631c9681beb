"""``run --demo``: the settings of the demo and its data (self-play, then evaluation games).

The demo shows the whole loop on a laptop within minutes: synthetic self-play crosses the
bootstrap threshold, a first model trains and is promoted at once (no production yet), a
warm-started second model trains after the demo's minimum interval, and the writer plays it
against production with a known strength advantage until the promotion test accepts it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from daemon.data.replaydb import connect_writer
from daemon.data.sources import expand
from daemon.registry.records import RegistryError
from daemon.registry.registry import ModelRegistry
from daemon.selfplay_sim import SelfPlaySim, write_evaluation_games
from daemon.settings import Settings

log = structlog.get_logger(__name__)
POLL = 2.0  # how often the evaluation writer looks for a new candidate (seconds)


def demo_settings(settings: Settings) -> Settings:
    """The settings the demo runs with: its database polled, its training and interval applied."""
    d = settings.demo
    update: dict[str, object] = {
        "training": settings.training.model_copy(
            update={"epochs": d.epochs, "channels": d.channels, "blocks": d.blocks}
        ),
        "triggers": settings.triggers.model_copy(update={"min_interval": d.min_interval}),
    }
    if Path(d.db).absolute() not in expand(settings.game_dbs):
        update["game_dbs"] = (*settings.game_dbs, str(d.db))
    return settings.model_copy(update=update)


def create_demo_db(settings: Settings) -> None:
    """Create the demo's database before the first poll (else it is an unhealthy source at start)."""
    connect_writer(Path(settings.demo.db)).close()


class DemoData:
    """Writes the demo's games: self-play up to ``demo.max_games``, evaluation games per candidate."""

    def __init__(self, settings: Settings, models: ModelRegistry) -> None:
        self.settings = settings
        self.models = models
        self.played: dict[str, int] = {}  # evaluation games written per candidate

    async def run(self, stop: asyncio.Event) -> None:
        d = self.settings.demo
        sim = SelfPlaySim(d.db, [d.config], d.rate)
        selfplay = asyncio.create_task(sim.run(stop, max_games=d.max_games))
        try:
            while not stop.is_set():
                await self._evaluate_once()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=POLL)
                except TimeoutError:
                    pass
        finally:
            await asyncio.gather(selfplay, return_exceptions=True)

    async def _evaluate_once(self) -> None:
        d = self.settings.demo
        try:
            candidate = await asyncio.to_thread(self.models.get_latest, d.config, stage="candidate")
            production = await asyncio.to_thread(self.models.get_production, d.config)
        except RegistryError as e:
            log.warning("demo.registry_unavailable", reason=str(e))
            return
        if candidate is None or production is None:
            return  # a first model is promoted at once: nothing to play against yet
        done = self.played.get(candidate.model_id, 0)
        if done >= d.evaluation_games:
            return
        n = min(d.evaluation_batch, d.evaluation_games - done)
        await asyncio.to_thread(
            write_evaluation_games,
            d.db,
            d.config,
            n,
            candidate=candidate.model_id,
            production=production.model_id,
            elo_diff=d.candidate_elo,
            seed=len(self.played) * 1_000_003 + done,
        )
        self.played[candidate.model_id] = done + n
        log.info(
            "demo.evaluation_games",
            candidate=candidate.model_id,
            production=production.model_id,
            games=done + n,
            elo_diff=d.candidate_elo,
        )
