"""Split by game and stream batches from the memory-mapped arrays.

Nothing copies the dataset per epoch: each epoch shuffles the order of contiguous
index blocks, reads a bounded window of rows from the memmap (sorted, so reads are
near-sequential), shuffles inside the window and gathers one batch at a time into
three host tensors (stored planes; float32 globals + values; int64 policy + seat):
three host-to-device copies a batch, from pinned memory on CUDA. Bit-packed files
(``packbits`` layout) and cell-index files (``cells`` layout) stay as stored until
the batch is on the training device: the host reads and copies 8x (packbits) or
H*W/2 x (cells: 2 bytes a plane) fewer bytes than dense, and the unpack (a few
bitwise ops, or a scatter plus the constant planes) runs where the model runs. Cell
indices are range-checked on the host per read window first: an out-of-range index
in a device scatter is a device-side assert on CUDA, not an error naming the file.

With ``prefetch > 0`` a background thread (:mod:`.prefetch`) reads and gathers
``prefetch`` batches ahead; on CUDA it also issues the copies and the unpack on a side
stream, so the next batch is on the device before the current step ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from daemon.npz.format import LAYOUT_CELLS, LAYOUT_PACKBITS, packed_width
from daemon.npz.reader import TrainingArrays
from daemon.training.exitcodes import ExitCode, TrainerError
from daemon.training.trainer.prefetch import Prefetcher

VAL_MOD = 10  # game hash % 10 == 0 -> validation (~10% of games)
_BLOCK_ROWS = 1024
_WINDOW_BATCHES = 16
_SEATS = 4


def unpack_bits(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Packed planes (B, C, ceil(H*W/8)) uint8 -> 0/1 planes (B, C, H, W) uint8, on ``x``'s device.

    Same bit order as ``np.packbits`` (big-endian: cell f is bit 7 - f % 8 of byte f // 8);
    the padding bits past H*W are dropped.
    """
    if x.dtype != torch.uint8 or x.dim() != 3:
        raise ValueError(f"packed planes must be uint8 (B, C, P), got {x.dtype} {tuple(x.shape)}")
    b, c, p = x.shape
    if p != packed_width(height, width):
        raise ValueError(f"{p} bytes per plane, expected {packed_width(height, width)} for {height}x{width}")
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=x.device)
    bits = (x.unsqueeze(-1) >> shifts) & 1  # (B, C, P, 8)
    return bits.reshape(b, c, p * 8)[:, :, : height * width].reshape(b, c, height, width)


def unpack_cells(x: torch.Tensor, constant: torch.Tensor, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """Cell rows (B, C) int16 + constant (C, H, W) uint8 -> 0/1 planes (B, C, H, W) ``dtype``, on x's device.

    ``x[b, c]`` is the flat index ``row * W + col`` of plane c's one set cell, -1 for none;
    indices must already be in [-1, H*W) (the loader checks each read window). ``dtype``
    float32 writes the model's input in one pass (no uint8 planes to convert); ``constant``
    may already be in ``dtype`` (the loader keeps a float copy on the device).
    """
    if x.dtype != torch.int16 or x.dim() != 2:
        raise ValueError(f"cell rows must be int16 (B, C), got {x.dtype} {tuple(x.shape)}")
    if constant.dtype not in (torch.uint8, dtype) or constant.dim() != 3 or constant.shape[0] != x.shape[1]:
        raise ValueError(
            f"constant must be uint8 (C, H, W) with C = {x.shape[1]}, got {constant.dtype} "
            f"{tuple(constant.shape)}"
        )
    b, c = x.shape
    _, h, w = constant.shape
    idx = x.long().unsqueeze(-1)
    # An empty plane (-1) scatters a 0 into cell 0: its only write, so it sets nothing.
    present = (idx >= 0).to(dtype)
    flat = torch.zeros((b, c, h * w), dtype=dtype, device=x.device)
    flat.scatter_(2, idx.clamp(min=0), present)
    return torch.maximum(flat.view(b, c, h, w), constant.to(device=x.device, dtype=dtype))


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # sorted row indices
    val: np.ndarray
    val_is_train: bool  # a single game: nothing to hold out


def split_by_game(game_ids: np.ndarray) -> Split:
    """Deterministic split on the game hash; rows of one game never sit on both sides."""
    gids = np.asarray(game_ids, dtype=np.int64)
    val_mask = (gids % VAL_MOD) == 0
    if not val_mask.any() or val_mask.all():
        games = np.unique(gids)
        if len(games) < 2:
            rows = np.arange(len(gids))
            return Split(rows, rows, True)
        val_mask = gids == games[0]  # tiny data sets: hold out the smallest hash
    return Split(np.flatnonzero(~val_mask), np.flatnonzero(val_mask), False)


def majority_baseline(policy: np.ndarray, split: Split) -> tuple[int, float]:
    """Most frequent train target and its accuracy on the validation rows."""
    train = policy[split.train]
    train = train[train >= 0]
    if train.size == 0:
        return -1, 0.0
    majority = int(np.bincount(train).argmax())
    val = policy[split.val]
    val = val[val >= 0]
    return majority, float((val == majority).mean()) if val.size else 0.0


@dataclass
class Batch:
    x: torch.Tensor  # float (B, C, H, W)
    g: torch.Tensor  # (B, G)
    values_mp: torch.Tensor  # (B, 4)
    values: torch.Tensor  # (B,)
    policy: torch.Tensor  # (B,) long, -1 = none
    seat: torch.Tensor  # (B,) long, 0-based seat of the mover

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.x, self.g, self.values_mp, self.values, self.policy, self.seat)


@dataclass
class HostBatch:
    """One batch as gathered on the host (pinned on CUDA): three tensors, three copies."""

    x: torch.Tensor  # stored planes: uint8 (dense, packbits) or int16 (cells)
    f: torch.Tensor  # float32 (B, G + 5): globals, values_mp (4 seats), values
    i: torch.Tensor  # int64 (B, 2): policy index, seat

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.x, self.f, self.i)


class BatchLoader:
    """Batches over ``indices``; with ``world > 1`` each rank gets its own shard.

    ``equal_shards`` (training) gives every rank the same number of rows so DDP
    ranks run the same number of steps; otherwise (validation) shards cover all rows.
    """

    def __init__(
        self,
        arrays: TrainingArrays,
        indices: np.ndarray,
        batch_size: int,
        device: torch.device,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        equal_shards: bool = True,
        prefetch: int = 2,
        channels_last: bool = False,
    ) -> None:
        self.arrays = arrays
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world = world
        self.equal_shards = equal_shards
        self.prefetch = prefetch
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.pin = device.type == "cuda"  # page-locked buffers: asynchronous DMA copies
        # The cells layout's constant planes go to the device once (as float), not per batch.
        self.constant: torch.Tensor | None = None
        if arrays.layout == LAYOUT_CELLS:
            if arrays.constant is None:
                raise ValueError(f"{arrays.path}: cells layout without its constant planes")
            self.constant = torch.from_numpy(arrays.constant).to(device=device, dtype=torch.float32)

    def _order(self, epoch: int) -> np.ndarray:
        idx = self.indices
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])  # same on every rank
            blocks = np.array_split(idx, max(1, -(-len(idx) // _BLOCK_ROWS)))
            idx = np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
        if self.world > 1:
            if self.equal_shards:
                per = len(idx) // self.world
                idx = idx[self.rank * per : (self.rank + 1) * per]
            else:
                idx = idx[self.rank :: self.world]
        return idx

    def num_samples(self, epoch: int = 0) -> int:
        return len(self._order(epoch))

    def epoch(self, epoch: int) -> Generator[Batch]:
        """The epoch's batches on the device; close the iterator to stop early (joins the thread)."""
        host = self.host_batches(epoch)
        if self.prefetch == 0:
            with contextlib.closing(host):
                for hb in host:
                    yield self.to_device(hb)
            return
        if self.device.type == "cuda":  # copies and unpack on the thread's side stream
            with contextlib.closing(iter(Prefetcher(host, self.to_device, self.prefetch, self.device))) as it:
                yield from it
            return
        # CPU: the thread reads and gathers; the unpack stays here, beside the model: on a
        # thread it would need a second free core for little gain, and a busy machine has none.
        with contextlib.closing(iter(Prefetcher(host, _same, self.prefetch, self.device))) as it:
            for hb in it:
                yield self.to_device(hb)

    def host_batches(self, epoch: int) -> Generator[HostBatch]:
        order = self._order(epoch)
        rng = np.random.default_rng([self.seed, epoch, self.rank, 1])
        window = self.batch_size * _WINDOW_BATCHES
        for start in range(0, len(order), window):
            rows = np.sort(order[start : start + window])
            chunk = self.read_rows(rows)
            perm = rng.permutation(len(rows)) if self.shuffle else np.arange(len(rows))
            for b in range(0, len(rows), self.batch_size):
                sel = perm[b : b + self.batch_size]
                yield HostBatch(*(self._gather(part, sel) for part in chunk))

    def read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = self.arrays
        x = np.asarray(a.features[rows], dtype=a.features.dtype.newbyteorder("="))
        if a.layout == LAYOUT_CELLS and x.size:
            _, h, w = a.input_shape
            lo, hi = int(x.min()), int(x.max())
            if lo < -1 or hi >= h * w:
                raise TrainerError(
                    ExitCode.BAD_DATA,
                    f"{a.path}: feature_cells value out of range [-1, {h * w}) for a {h}x{w} grid "
                    f"(min {lo}, max {hi}) in rows {int(rows[0])}..{int(rows[-1])}",
                )
        f = np.empty((len(rows), a.num_globals + _SEATS + 1), dtype=np.float32)
        f[:, : a.num_globals] = a.globals[rows]
        f[:, a.num_globals : -1] = a.values_mp[rows]
        f[:, -1] = a.values[rows]
        i = np.empty((len(rows), 2), dtype=np.int64)
        i[:, 0] = a.policy_index[rows]
        i[:, 1] = np.clip(np.asarray(a.player_to_move[rows], dtype=np.int64) - 1, 0, _SEATS - 1)
        return x, f, i

    def _gather(self, part: np.ndarray, sel: np.ndarray) -> torch.Tensor:
        dtype = torch.from_numpy(part[:0]).dtype
        out = torch.empty((len(sel), *part.shape[1:]), dtype=dtype, pin_memory=self.pin)
        np.take(part, sel, axis=0, out=out.numpy(), mode="clip")  # "raise" would buffer; sel is in range
        return out

    def to_device(self, hb: HostBatch) -> Batch:
        """Copy (non-blocking from pinned memory on CUDA), unpack the planes, split the fields."""
        dev, a = self.device, self.arrays
        asynchronous = dev.type == "cuda"
        x = hb.x.to(dev, non_blocking=asynchronous)
        f = hb.f.to(dev, non_blocking=asynchronous)
        i = hb.i.to(dev, non_blocking=asynchronous)
        if a.layout == LAYOUT_PACKBITS:
            _, h, w = a.input_shape
            x = unpack_bits(x, h, w)
        elif self.constant is not None:  # the cells layout, checked in __init__
            x = unpack_cells(x, self.constant, torch.float32)
        x = x.to(dtype=torch.float32, memory_format=self.memory_format)
        g = a.num_globals
        return Batch(x=x, g=f[:, :g], values_mp=f[:, g:-1], values=f[:, -1], policy=i[:, 0], seat=i[:, 1])


def _same(hb: HostBatch) -> HostBatch:
    return hb
