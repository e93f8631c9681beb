"""New evaluation games per config, read from the polled databases (blocking: run in a thread)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from daemon.data.errors import GameDBError
from daemon.data.games import Game
from daemon.data.sources import GameSources
from daemon.registry.registry import ModelRegistry

log = structlog.get_logger(__name__)

# (source path, config) -> the highest games.rowid already read
Watermarks = dict[tuple[str, str], int]


@dataclass(frozen=True)
class EvaluationBatch:
    config: str
    model_id: str  # the config's current model
    games: list[Game]
    lineage: frozenset[str]  # every model id of the config (games between two are promotion games)


def collect_evaluation_games(
    configs: Sequence[str],
    sources: GameSources,
    models: ModelRegistry,
    evaluation_sources: Sequence[str],
    watermarks: Watermarks,
) -> list[EvaluationBatch]:
    """The evaluation games of each config added since ``watermarks`` (which it advances), each
    game read once. Only sources the last poll read are used."""
    out: list[EvaluationBatch] = []
    wanted = tuple(evaluation_sources)
    for key in configs:
        model = models.warm_start_parent(key)  # the config's current model: never a rejected one
        if model is None:
            continue
        games: list[Game] = []
        for path in sources.paths():
            db = sources.db(path)
            snap = db.snapshot
            if snap is None or not snap.ok or key not in snap.configs:
                continue
            mark = (str(path), key)
            try:
                games.extend(
                    db.iter_games(
                        key,
                        min_rowid=watermarks.get(mark, 0),
                        newest_first=False,
                        sources=wanted,
                        upto_rowid=snap.configs[key].watermark,
                        identity=snap.identity,  # never a file that replaced the polled one
                    )
                )
            except GameDBError as e:
                log.warning("curriculum.ingest_failed", source=str(path), reason=str(e))
                continue
            watermarks[mark] = snap.configs[key].watermark
        if games:
            lineage = frozenset(m.model_id for m in models.list_models(key))
            out.append(EvaluationBatch(key, model.model_id, games, lineage))
    return out
