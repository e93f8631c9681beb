"""Curriculum results from the game databases: evaluation games of the current model.

The caller reads the games (``GameDB.iter_games``) and passes them in with the
config's current model id; this module only decides which games count, which
seat the model played and whether it won. Each game is ingested once (its id is
stored with the result, in the same transaction). Games older than the
curriculum window are skipped: they cannot change a weight, and skipping them
keeps the stored id set bounded.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from daemon.decide.clock import resolve_now
from daemon.decide.curriculum import CurriculumFeedback


class PlayerLike(Protocol):
    @property
    def seat(self) -> int: ...


class GameLike(Protocol):
    """What ingestion reads of a game (``daemon.data.gamedb.Game`` fits)."""

    @property
    def game_id(self) -> str: ...
    @property
    def source(self) -> str | None: ...
    @property
    def winner(self) -> int | None: ...
    @property
    def created_at(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def players(self) -> list[Any]: ...


@dataclass(frozen=True)
class SeatMapping:
    """Where a game names the model on a seat (first match wins, in this order).

    1. a player whose attribute/key in ``player_fields`` equals the model id;
    2. ``metadata[k]`` for ``k`` in ``model_keys`` equals the model id and
       ``metadata[s]`` for ``s`` in ``seat_keys`` gives its seat;
    3. ``metadata`` / game ``extra`` ``opponent_keys`` equals the model id and
       ``opponent_seat_keys`` gives its seat.
    Elo is read from the first of ``elo_keys`` present in metadata.
    """

    player_fields: tuple[str, ...] = ("profile_id", "ai_profile_id", "model_id")
    model_keys: tuple[str, ...] = ("model_id", "current_model_id", "candidate_model_id")
    seat_keys: tuple[str, ...] = ("model_seat", "model_player", "candidate_seat")
    opponent_keys: tuple[str, ...] = ("opponent_model_id",)
    opponent_seat_keys: tuple[str, ...] = ("opponent_seat", "opponent_player")
    elo_keys: tuple[str, ...] = ("model_elo", "candidate_elo", "elo")


@dataclass
class IngestReport:
    config_key: str
    ingested: int = 0
    duplicate: int = 0
    wrong_source: int = 0
    unidentified: int = 0
    too_old: int = 0
    head_to_head: int = 0  # the current model against another of the config's models
    game_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int | str]:
        return {
            "config": self.config_key,
            "ingested": self.ingested,
            "duplicate": self.duplicate,
            "wrong_source": self.wrong_source,
            "unidentified": self.unidentified,
            "too_old": self.too_old,
            "head_to_head": self.head_to_head,
        }


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _seat(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def model_seat(game: GameLike, model_id: str, mapping: SeatMapping) -> int | None:
    """The seat the model played in ``game``, or None when the game does not name it."""
    for p in game.players:
        if any(_get(p, f) == model_id for f in mapping.player_fields):
            return _seat(_get(p, "seat"))
    meta = game.metadata or {}
    extra = _get(game, "extra") or {}
    if any(meta.get(k) == model_id for k in mapping.model_keys):
        for s in mapping.seat_keys:
            if (seat := _seat(meta.get(s))) is not None:
                return seat
    if any(meta.get(k) == model_id or _get(extra, k) == model_id for k in mapping.opponent_keys):
        for s in mapping.opponent_seat_keys:
            if (seat := _seat(meta.get(s))) is not None:
                return seat
    return None


def seats_another(game: GameLike, model_id: str, others: Collection[str], mapping: SeatMapping) -> bool:
    """Whether ``game`` also seats one of ``others`` (models of the same config, not ``model_id``)."""
    return any(m != model_id and model_seat(game, m, mapping) is not None for m in others)


def _played_at(game: GameLike, default: datetime) -> datetime:
    raw = game.created_at
    if isinstance(raw, datetime):
        when = raw
    elif isinstance(raw, str) and raw:
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            return default
    else:
        return default
    return when if when.tzinfo is not None else when.replace(tzinfo=default.tzinfo)


def ingest_evaluation_games(
    feedback: CurriculumFeedback,
    config_key: str,
    games: Iterable[GameLike],
    current_model_id: str,
    *,
    mapping: SeatMapping | None = None,
    sources: tuple[str, ...] | None = None,
    lineage: Collection[str] = (),
    now: datetime | None = None,
) -> IngestReport:
    """Record each new evaluation game of ``current_model_id`` once; return what was counted.

    A game that also seats another model of ``lineage`` (the config's own models) is a promotion
    game: the production model losing to a stronger candidate is the test working, not a
    regression, so it never reaches the curriculum's win rate (the promotion test counts it).
    """
    now = resolve_now(now)
    mapping = mapping or SeatMapping()
    allowed = {s.lower() for s in (sources if sources is not None else feedback.config.evaluation_sources)}
    oldest = now.timestamp() - feedback.config.window
    seen = feedback.ingested_ids(config_key)
    report = IngestReport(config_key)
    rows: list[tuple[int, float | None, datetime | None]] = []
    batch: set[str] = set()
    for game in games:
        gid = str(game.game_id)
        if gid in seen or gid in batch:
            report.duplicate += 1
            continue
        if (game.source or "").lower() not in allowed:
            report.wrong_source += 1
            continue
        when = _played_at(game, now)
        if when.timestamp() < oldest:
            report.too_old += 1
            continue
        seat = model_seat(game, current_model_id, mapping)
        if seat is None:
            report.unidentified += 1
            continue
        if lineage and seats_another(game, current_model_id, lineage, mapping):
            report.head_to_head += 1
            continue
        result = 0 if not game.winner else (1 if game.winner == seat else -1)
        meta = game.metadata or {}
        elo = next((float(meta[k]) for k in mapping.elo_keys if isinstance(meta.get(k), int | float)), None)
        rows.append((result, elo, when))
        batch.add(gid)
        report.game_ids.append(gid)
    if rows:
        feedback.record_games(config_key, rows, game_ids=report.game_ids)
    report.ingested = len(rows)
    return report
