"""Residual CNN with a policy head and one tanh value per seat."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

MAX_SEATS = 4
_VALUE_HIDDEN = 64
_POLICY_CHANNELS = 4


@dataclass(frozen=True)
class Architecture:
    channels: int
    blocks: int
    in_planes: int
    num_globals: int
    policy_size: int
    grid: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Architecture:
        return cls(**{k: int(d[k]) for k in cls.__dataclass_fields__})


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(x + y)


class RingNet(nn.Module):
    """stem -> residual tower (+ globals MLP added per channel) -> policy logits, seat values."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        c, cells = arch.channels, arch.grid * arch.grid
        self.stem = nn.Sequential(
            nn.Conv2d(arch.in_planes, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        )
        self.tower = nn.Sequential(*(ResidualBlock(c) for _ in range(arch.blocks)))
        # Globals (move number, player to move, ...) shift every channel before the heads.
        self.globals_mlp: nn.Module | None = None
        if arch.num_globals > 0:
            self.globals_mlp = nn.Sequential(nn.Linear(arch.num_globals, c), nn.ReLU(), nn.Linear(c, c))
        self.policy_conv = nn.Sequential(
            nn.Conv2d(c, _POLICY_CHANNELS, 1, bias=False), nn.BatchNorm2d(_POLICY_CHANNELS), nn.ReLU()
        )
        self.policy_fc = nn.Linear(_POLICY_CHANNELS * cells, arch.policy_size)
        self.value_conv = nn.Sequential(nn.Conv2d(c, 1, 1, bias=False), nn.BatchNorm2d(1), nn.ReLU())
        self.value_fc = nn.Sequential(
            nn.Linear(cells, _VALUE_HIDDEN), nn.ReLU(), nn.Linear(_VALUE_HIDDEN, MAX_SEATS)
        )

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.tower(self.stem(x))
        if self.globals_mlp is not None:
            h = F.relu(h + self.globals_mlp(g)[:, :, None, None])
        policy = self.policy_fc(self.policy_conv(h).flatten(1))
        values = torch.tanh(self.value_fc(self.value_conv(h).flatten(1)))
        return policy, values


def shape_mismatches(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between ``model``'s parameters and a saved state dict."""
    own = model.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    return problems
