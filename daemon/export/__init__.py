"""Export: game databases -> ``data/training/{config}.npz`` (DESIGN sections 4 and 6).

* :mod:`daemon.export.tiers` - ``get_export_settings`` / ``ExportSettings`` (data tiers);
* :mod:`daemon.export.cache` - ``ExportCache`` (``needs_export`` / ``record_export``);
* :mod:`daemon.export.encoder` - the built-in ``move_history`` encoder and the plug-in protocol;
* :mod:`daemon.export.writer` - the streaming, atomic NPZ writer;
* :mod:`daemon.export.job` - ``run_export`` (pipeline) and ``cli_export`` (``ringrift-daemon export``).
"""

from __future__ import annotations

from daemon.export.cache import CacheDecision, ExportCache
from daemon.export.encoder import (
    ENCODER_NAME,
    ENCODER_VERSION,
    Encoder,
    EncoderError,
    MoveHistoryEncoder,
    load_encoder,
)
from daemon.export.job import ExportError, ExportExit, ExportResult, cli_export, run_export
from daemon.export.tiers import ExportSettings, get_export_settings, settings_for_count
from daemon.export.writer import DiskFull, ExportWriteError, NpzStreamWriter

__all__ = [
    "ENCODER_NAME",
    "ENCODER_VERSION",
    "CacheDecision",
    "DiskFull",
    "Encoder",
    "EncoderError",
    "ExportCache",
    "ExportError",
    "ExportExit",
    "ExportResult",
    "ExportSettings",
    "ExportWriteError",
    "MoveHistoryEncoder",
    "NpzStreamWriter",
    "cli_export",
    "get_export_settings",
    "load_encoder",
    "run_export",
    "settings_for_count",
]
