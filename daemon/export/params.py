"""What an export's output depends on: the encoder's layout and arrays, and every parameter."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from daemon.export.encoder import Encoder
from daemon.export.tiers import ExportSettings
from daemon.keys import geometry
from daemon.npz import format as fmt
from daemon.npz.format import FORMAT_VERSION, LAYOUT_CELLS, LAYOUT_DENSE, LAYOUTS, ArraySpec

GAME_FILTER = "status in (completed, finished) and winner is not null; newest first"


class ExportError(Exception):
    """An export that failed; the previous output and the cache are untouched."""


def feature_layout(encoder: Encoder) -> str:
    layout = getattr(encoder, "feature_layout", LAYOUT_DENSE)
    if layout not in LAYOUTS:
        raise ExportError(f"encoder {encoder.name!r}: feature_layout must be one of {', '.join(LAYOUTS)}")
    if layout == LAYOUT_CELLS and not callable(getattr(encoder, "feature_constant", None)):
        raise ExportError(f"encoder {encoder.name!r}: the cells layout needs feature_constant(board)")
    return str(layout)


def array_specs(encoder: Encoder, board: str) -> dict[str, ArraySpec]:
    return fmt.row_specs(
        feature_layout(encoder), encoder.num_planes, encoder.num_globals, geometry(board).grid
    )


def output_layout(encoder: Encoder, wanted: str | None) -> str:
    """The file's layout: ``export.feature_layout`` when set, else the encoder's own."""
    return wanted or feature_layout(encoder)


def export_params(
    encoder: Encoder, es: ExportSettings, history_length: int, spec: str, layout: str | None = None
) -> dict[str, Any]:
    """Every parameter the output depends on (part of the cache key and stored in the NPZ)."""
    return {
        fmt.META_FORMAT_VERSION: FORMAT_VERSION,
        "encoder": encoder.name,
        "encoder_version": encoder.version,
        "encoder_spec": spec,
        "history_length": history_length,
        "sample_every": es.sample_every,
        "max_games": es.max_games,
        "filters": GAME_FILTER,
        fmt.META_NUM_PLANES: encoder.num_planes,
        fmt.META_NUM_GLOBALS: encoder.num_globals,
        fmt.META_FEATURE_LAYOUT: output_layout(encoder, layout),
        fmt.META_POLICY_SIZE: encoder.policy_size(es.board_type),
    }


def feature_constant(encoder: Encoder, board: str) -> npt.NDArray[np.uint8]:
    """The validated ``feature_constant`` planes of a ``cells`` encoder: uint8 0/1 (C, H, W)."""
    g = geometry(board).grid
    const = encoder.feature_constant(board)  # type: ignore[attr-defined]  # checked by feature_layout
    shape = (encoder.num_planes, g, g)
    if not isinstance(const, np.ndarray) or const.dtype != np.uint8 or const.shape != shape:
        got = (getattr(const, "dtype", None), getattr(const, "shape", None))
        raise ExportError(f"encoder {encoder.name!r}: feature_constant must be uint8 {shape}, got {got}")
    if const.size and int(const.max()) > 1:
        raise ExportError(f"encoder {encoder.name!r}: feature_constant planes must be 0/1")
    return const
