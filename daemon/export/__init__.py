"""Export: game databases -> ``data/training/{config}.npz`` (DESIGN sections 4 and 6).

* :mod:`daemon.export.tiers` - ``get_export_settings`` / ``ExportSettings`` (data tiers);
* :mod:`daemon.export.cache` - ``ExportCache`` (``needs_export`` / ``record_export``);
* :mod:`daemon.export.encoder` - the built-in ``move_history`` encoder and the plug-in protocol;
* :mod:`daemon.export.job` - ``run_export`` (the pipeline's and ``ringrift-daemon export``'s step).

The file format itself (member names, layouts, writer, reader) is :mod:`daemon.npz`.
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
from daemon.export.job import ExportError, ExportResult, run_export
from daemon.export.tiers import ExportSettings, get_export_settings, settings_for_count
from daemon.npz.writer import DiskFull, ExportWriteError, NpzStreamWriter

__all__ = [
    "ENCODER_NAME",
    "ENCODER_VERSION",
    "CacheDecision",
    "DiskFull",
    "Encoder",
    "EncoderError",
    "ExportCache",
    "ExportError",
    "ExportResult",
    "ExportSettings",
    "ExportWriteError",
    "MoveHistoryEncoder",
    "NpzStreamWriter",
    "get_export_settings",
    "load_encoder",
    "run_export",
    "settings_for_count",
]
