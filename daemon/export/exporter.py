"""The pipeline's export step: :func:`~daemon.export.job.run_export` with the service's settings."""

from __future__ import annotations

from pathlib import Path

from daemon.export.job import ExportResult, run_export
from daemon.settings import Settings


class Exporter:
    """Blocking (reads databases, writes the NPZ): the pipeline runs it in a worker thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def export(self, config: str, *, force: bool = False, db_paths: list[Path] | None = None) -> ExportResult:
        return run_export(self.settings, config, force=force, db_paths=db_paths)
