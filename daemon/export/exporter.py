"""The pipeline's export step: :func:`~daemon.export.job.run_export` with the service's settings."""

from __future__ import annotations

from pathlib import Path

from daemon.data.sources import GameSources
from daemon.export.job import ExportResult, run_export
from daemon.settings import Settings


class Exporter:
    """Blocking (reads databases, writes the NPZ): the pipeline runs it in a worker thread.

    With ``sources`` (the service's poll) the export's snapshot is the poll's warm one,
    refreshed incrementally, instead of a full scan of every database per run.
    """

    def __init__(self, settings: Settings, sources: GameSources | None = None) -> None:
        self.settings = settings
        self.sources = sources

    def export(self, config: str, *, force: bool = False, db_paths: list[Path] | None = None) -> ExportResult:
        refresh = self.sources.snapshot_readable if self.sources is not None and db_paths is None else None
        return run_export(self.settings, config, force=force, db_paths=db_paths, refresh=refresh)
