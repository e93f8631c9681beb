"""The seed's component names for scripts, with defaults from the script's settings (DESIGN 10).

Each is the package's own class or function, given what a command would give it: the state
store under ``data_dir``, the cache file, the lock backend and directory, the registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.api.settings import script_environ, script_settings
from daemon.api.sync import run_sync
from daemon.data.gamedb import SourceSnapshot
from daemon.decide import triggers as _triggers
from daemon.decide.curriculum import CurriculumFeedback
from daemon.decide.health import TrainingHealthMonitor
from daemon.export import cache as _cache
from daemon.export.encoder import load_encoder
from daemon.export.job import export_params
from daemon.export.tiers import get_export_settings, take_snapshots
from daemon.keys import make_config_key, validate_config_key
from daemon.locks import lock as _lock
from daemon.registry.registry import ModelRegistry
from daemon.registry.registry import register_trained_model as _register
from daemon.settings import Settings

__all__ = [
    "DistributedLock",
    "ExportCache",
    "TrainingTriggers",
    "get_curriculum_feedback",
    "get_training_health_monitor",
    "register_trained_model",
]


def _state_db(s: Settings) -> Path:
    return s.state_dir / "decide.db"  # the service's own store: a script and the service agree


def get_curriculum_feedback(settings: Settings | None = None) -> CurriculumFeedback:
    """An opened :class:`CurriculumFeedback` over the settings' state store."""
    s = settings or script_settings()
    return CurriculumFeedback.from_settings(_state_db(s), s.curriculum, configs=s.configs).open()


def get_training_health_monitor(settings: Settings | None = None) -> TrainingHealthMonitor:
    """An opened :class:`TrainingHealthMonitor` over the settings' state store."""
    s = settings or script_settings()
    return TrainingHealthMonitor.from_settings(_state_db(s), s.health, configs=s.configs).open()


class TrainingTriggers(_triggers.TrainingTriggers):
    """The triggers with the settings' ``triggers:`` defaults. A config the script never
    updated is read as ``ringrift-daemon status`` shows it (usable games, games at the last
    training, models, win rate) the first time a decision about it is asked for."""

    def __init__(
        self,
        config: _triggers.TriggerConfig | None = None,
        store: Any = None,
        *,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or script_settings()
        super().__init__(config or self.settings.triggers, store)
        self._seeded = False

    def _seed(self) -> None:
        from daemon.service.report import build_report  # the service's view: built on demand

        self._seeded = True
        report = run_sync(build_report(self.settings, script_environ()))
        for key, c in report["configs"].items():
            if key in self._states:
                continue
            usable, new = int(c["usable_games"]), int(c["new_games"])
            self.update_config_state(
                key,
                games_count=usable,
                games_at_training=usable - new if usable - new > 0 else None,
                model_count=int(c.get("model_count") or 0),
                win_rate=c.get("win_rate"),
                curriculum_weight=float(c.get("curriculum_weight", 1.0)),
            )

    def should_train(self, key: str, now: datetime | None = None) -> _triggers.TriggerDecision:
        if not self._seeded and validate_config_key(key) not in self._states:
            self._seed()
        return super().should_train(key, now=now)


class ExportCache(_cache.ExportCache):
    """The cache ``export`` and the service use (``{data_dir}/training/.export_cache.json``).
    Without ``params`` both calls use the built-in exporter's parameters for these sources;
    without ``snapshots`` the sources are read now (for ``record_export``: after the export, so
    pass the snapshot taken before it when games may arrive meanwhile)."""

    def __init__(self, path: Path | str | None = None, *, settings: Settings | None = None) -> None:
        self.settings = settings or script_settings()
        super().__init__(Path(path) if path else self.settings.training_dir / ".export_cache.json")

    def _defaults(
        self,
        db_paths: Sequence[Path | str],
        board_type: str,
        num_players: int,
        params: Mapping[str, Any] | None,
        snapshots: Mapping[str, SourceSnapshot] | None,
    ) -> tuple[dict[str, Any], Mapping[str, SourceSnapshot]]:
        paths = [Path(_cache.norm_path(p)) for p in db_paths]
        snaps = snapshots if snapshots is not None else take_snapshots(paths)
        if params is None:
            e = self.settings.export
            es = get_export_settings(paths, board_type, num_players, snapshots=snaps)
            encoder = load_encoder(e.encoder, e.history_length)
            params = export_params(encoder, es, e.history_length, e.encoder, e.feature_layout)
        return dict(params), snaps

    def needs_export(
        self,
        db_paths: Sequence[Path | str],
        output_path: Path | str,
        board_type: str,
        num_players: int,
        force: bool = False,
        *,
        params: Mapping[str, Any] | None = None,
        snapshots: Mapping[str, SourceSnapshot] | None = None,
        verify_hash: bool = False,
    ) -> _cache.CacheDecision:
        make_config_key(board_type, num_players)
        if force:
            return _cache.CacheDecision(True, "forced (force=True)")
        p, snaps = self._defaults(db_paths, board_type, num_players, params, snapshots)
        paths = [Path(x) for x in db_paths]
        return super().needs_export(
            paths,
            Path(output_path),
            board_type,
            num_players,
            params=p,
            snapshots=snaps,
            verify_hash=verify_hash,
        )

    def record_export(
        self,
        db_paths: Sequence[Path | str],
        output_path: Path | str,
        board_type: str,
        num_players: int,
        samples_exported: int,
        *,
        params: Mapping[str, Any] | None = None,
        snapshots: Mapping[str, SourceSnapshot] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        p, snaps = self._defaults(db_paths, board_type, num_players, params, snapshots)
        paths = [Path(x) for x in db_paths]
        return super().record_export(
            paths,
            Path(output_path),
            board_type,
            num_players,
            samples_exported,
            params=p,
            snapshots=snaps,
            **kwargs,
        )


class DistributedLock(_lock.DistributedLock):
    """``DistributedLock("training:square8_2p")``: Redis when the settings (or ``REDIS_URL``)
    name one, else a file lock under ``{data_dir}/locks``; keywords override the settings."""

    def __init__(self, name: str, *, settings: Settings | None = None, **kwargs: Any) -> None:
        s = settings or script_settings()
        opts: dict[str, Any] = {"backend": s.locks.backend, "lock_dir": s.lock_dir}
        r = s.redis
        if r is not None:
            opts.update(
                redis_url=r.url,
                key_prefix=r.key_prefix,
                password=r.resolved_password(),
                ttl=r.ttl,
                connect_timeout=r.connect_timeout,
            )
        opts.update(kwargs)
        super().__init__(name, **opts)


def register_trained_model(
    model_path: Path | str,
    board_type: str,
    num_players: int,
    training_config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    source_data_paths: Sequence[Path | str] = (),
    parent_model_id: str | None = None,
    *,
    settings: Settings | None = None,
    registry: ModelRegistry | None = None,
    registry_dir: Path | str | None = None,
    **kwargs: Any,
) -> str:
    """Register into the registry the settings describe (``registry_dir``/``registry`` override)."""
    args = (model_path, board_type, num_players, training_config, metrics, source_data_paths, parent_model_id)
    if registry is not None or registry_dir is not None:
        return _register(*args, registry=registry, registry_dir=registry_dir, **kwargs)
    with ModelRegistry.from_settings(settings or script_settings()) as reg:
        return _register(*args, registry=reg, **kwargs)
