"""Checkpoint file: atomic write and warm-start loading (format in CONTRACTS.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from daemon.training.exitcodes import ExitCode, TrainerError
from daemon.training.trainer.model import Architecture, shape_mismatches

FORMAT_VERSION = 1
CHECKPOINT_NAME = "model.pt"


def save_checkpoint(path: Path, model_state: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """temp file in the same dir + fsync + rename + fsync dir: never a half-written model.pt."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    payload = {"format_version": FORMAT_VERSION, "model_state": model_state, "metadata": metadata}
    try:
        with tmp.open("wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainerError(ExitCode.BAD_ARGS, f"{path}: --init checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise TrainerError(ExitCode.BAD_DATA, f"{path}: unreadable checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model_state"), dict):
        raise TrainerError(ExitCode.BAD_DATA, f"{path}: not a trainer checkpoint (no model_state)")
    return ckpt


def parent_architecture(ckpt: dict[str, Any]) -> dict[str, Any]:
    meta = ckpt.get("metadata")
    arch = meta.get("architecture") if isinstance(meta, dict) else None
    return arch if isinstance(arch, dict) else {}


def warm_start(model: nn.Module, arch: Architecture, ckpt: dict[str, Any], path: Path) -> None:
    """Load the parent's weights or raise INIT_MISMATCH saying what differs."""
    parent = parent_architecture(ckpt)
    diffs = [
        f"{k}: parent {parent[k]} vs this run {v}"
        for k, v in arch.as_dict().items()
        if k in parent and int(parent[k]) != v
    ]
    state = ckpt["model_state"]
    diffs += shape_mismatches(model, state)
    if diffs:
        raise TrainerError(
            ExitCode.INIT_MISMATCH,
            f"{path}: parent checkpoint does not fit this model: " + "; ".join(diffs[:8]),
        )
    model.load_state_dict(state)
