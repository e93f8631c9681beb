"""``get_optimized_pipeline()``: the service's pipeline, synchronous for scripts (DESIGN 10).

The script's pipeline is the one ``ringrift-daemon train`` builds (:func:`build_app` from the
script's settings), living on its own loop thread: ``run_training`` blocks and returns the
:class:`PipelineResult`; ``arun_training`` is its async twin for callers with a loop.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.api.settings import script_environ, script_settings
from daemon.api.sync import LoopThread
from daemon.pipeline import PipelineResult
from daemon.service.app import App, build_app
from daemon.settings import Settings

__all__ = ["PipelineStatus", "ScriptPipeline", "get_optimized_pipeline"]


@dataclass(frozen=True)
class PipelineStatus:
    """``pipeline.get_status()``: attributes, and ``as_dict()`` for JSON."""

    health_status: str
    health_summary: str
    available_features: dict[str, Any]
    active_runs: dict[str, Any] = field(default_factory=dict)
    curriculum_weights: dict[str, float] = field(default_factory=dict)
    recent_results: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineStatus:
        return cls(
            str(d["health_status"]),
            str(d.get("health_summary", "")),
            dict(d.get("available_features", {})),
            dict(d.get("active_runs", {})),
            dict(d.get("curriculum_weights", {})),
            list(d.get("recent_results", [])),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScriptPipeline:
    """The app is built and started on first use (on the loop thread) and closed by :meth:`close`
    (or at interpreter exit)."""

    def __init__(self, settings: Settings, environ: dict[str, str]) -> None:
        self.settings = settings
        self.environ = environ
        self._loop = LoopThread()
        self._app: App | None = None
        self._guard = threading.Lock()
        self._closed = False

    async def _started(self) -> App:
        if self._app is None:
            app = build_app(self.settings, self.environ)
            await app.start()
            self._app = app
        return self._app

    async def _status(self) -> PipelineStatus:
        app = await self._started()
        return PipelineStatus.from_dict(app.pipeline.get_status(datetime.now(UTC)))

    async def _run(self, key: str, paths: list[Path] | None, force: bool) -> PipelineResult:
        app = await self._started()
        return await app.pipeline.run_training(key, paths, force=force, reason="script")

    def get_status(self) -> PipelineStatus:
        return self._loop.call(self._status())

    def run_training(
        self, config_key: str, db_paths: Sequence[Path | str] | None = None, *, force: bool = False
    ) -> PipelineResult:
        """One pass (lock, export, train, register), blocking; ``db_paths`` default to the settings'."""
        return self._loop.call(self._run(config_key, _paths(db_paths), force))

    async def arun_training(
        self, config_key: str, db_paths: Sequence[Path | str] | None = None, *, force: bool = False
    ) -> PipelineResult:
        return await self._loop.acall(self._run(config_key, _paths(db_paths), force))

    async def _close(self) -> None:
        if self._app is not None:
            app, self._app = self._app, None
            await app.close()

    def close(self) -> None:
        with self._guard:
            if self._closed:
                return
            self._closed = True
            try:
                self._loop.call(self._close())
            finally:
                self._loop.stop()

    def __enter__(self) -> ScriptPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _paths(db_paths: Sequence[Path | str] | None) -> list[Path] | None:
    # Absolute here: the script's working directory is the one its relative paths mean.
    return None if db_paths is None else [Path(p).absolute() for p in db_paths]


def get_optimized_pipeline(settings: Settings | None = None) -> ScriptPipeline:
    """A pipeline over the settings a command would use (see :mod:`daemon.api.settings`)."""
    pipeline = ScriptPipeline(settings or script_settings(), script_environ())
    atexit.register(pipeline.close)
    return pipeline
