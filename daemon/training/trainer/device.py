"""The training device and its numerics: CUDA or CPU, mixed precision, backend switches."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from daemon.training.exitcodes import ExitCode, TrainerError
from daemon.training.trainer import ddp


def pick_device(requested: str, info: ddp.DistInfo) -> torch.device:
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise TrainerError(ExitCode.BAD_ARGS, "--device cuda requested but CUDA is not available")
    if requested == "cuda" or (requested == "auto" and has_cuda):
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: float32) and whether a GradScaler guards fp16 gradients."""

    dtype: torch.dtype | None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    @property
    def name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def resolve_precision(mode: str, device: torch.device) -> Precision:
    """``--amp``: auto = bf16 where the GPU has it (compute capability >= 8), else fp16; float32 on CPU."""
    if mode == "off":
        return Precision(None)
    if mode == "fp16":
        return Precision(torch.float16)
    if mode == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise TrainerError(ExitCode.BAD_ARGS, f"--amp bf16: {device} has no bfloat16 support")
        return Precision(torch.bfloat16)
    if mode != "auto":
        raise TrainerError(ExitCode.BAD_ARGS, f"--amp {mode!r}: expected auto, bf16, fp16 or off")
    if device.type != "cuda":
        return Precision(None)
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return Precision(torch.bfloat16 if bf16 else torch.float16)


def configure_backends(device: torch.device) -> None:
    """CUDA: cuDNN picks the fastest kernels for the (fixed) batch shapes; float32 matmuls may use TF32."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


def fused_optimizer_ok(device: torch.device) -> bool:
    """Fused AdamW: one kernel per step, and it takes GradScaler's inf flag on the device (no host sync)."""
    return device.type in ("cuda", "cpu")
