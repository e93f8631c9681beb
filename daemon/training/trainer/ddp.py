"""torch.distributed glue: one code path for a single process and for torchrun workers.

Every collective takes a tensor on the training device: NCCL (CUDA) accepts nothing else,
gloo (CPU) takes CPU tensors; :func:`all_reduce_sum` refuses a tensor on the wrong device
with an error instead of NCCL's failure deep in the run. Teardown after a finished run is a
barrier, then ``destroy_process_group``: without the barrier the rank that finishes first
tears its connections down while another is still inside its last collective or writing
the checkpoint, and gloo may abort that rank ("terminate called without an active
exception") after a run that succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env(env: Mapping[str, str]) -> DistInfo:
    """Read the variables torchrun sets (WORLD_SIZE, RANK, LOCAL_RANK)."""
    return DistInfo(
        rank=int(env.get("RANK", "0")),
        world=int(env.get("WORLD_SIZE", "1")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
    )


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init(info: DistInfo, device: torch.device) -> None:
    if not info.enabled:
        return
    if device.type == "cuda":  # NCCL: bind this rank's GPU (eager communicator, barriers know it)
        dist.init_process_group("nccl", rank=info.rank, world_size=info.world, device_id=device)
    else:
        dist.init_process_group("gloo", rank=info.rank, world_size=info.world)


def check_collective_tensor(t: torch.Tensor, device: torch.device) -> None:
    """A collective's tensor must live on the training device (NCCL: CUDA only)."""
    if t.device.type != device.type or (device.index is not None and t.device.index != device.index):
        raise ValueError(
            f"collective on a {t.device} tensor; the {backend_for(device)} backend needs it on {device}"
        )


def all_reduce_sum(t: torch.Tensor, info: DistInfo, device: torch.device) -> torch.Tensor:
    """Sum ``t`` (on ``device``) over all ranks in place; the same tensor back (single process: as is)."""
    check_collective_tensor(t, device)
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def close(info: DistInfo, device: torch.device | None, *, finished: bool) -> None:
    """End the process group; after a finished run (every rank got here) wait for all ranks first.

    ``finished=False`` (an error on this rank): no barrier, the other ranks may be inside a
    different collective; torchrun ends them when this rank exits non-zero.
    """
    if not (info.enabled and dist.is_initialized()):
        return
    if finished:
        if device is not None and device.type == "cuda":
            dist.barrier(device_ids=[device.index or 0])
        else:
            dist.barrier()
    dist.destroy_process_group()
