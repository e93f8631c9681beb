"""Trainer throughput vs a bare torch loop (same model, batch size, thread count, same run).

``python -m bench.trainer_throughput [--samples N] [--batch-size B] [--threads T] [--repeats R]
[--layout packbits|cells|dense]`` prints one JSON object. The trainer side is
``Trainer.train_epoch`` reading the memory-mapped NPZ (unpack/uint8 -> float per batch,
clipping, scheduler, NaN/stop checks); the bare side feeds tensors from memory to
forward/loss/backward/step. For a dense file those are pre-built float tensors; for a
packbits or cells file (what the export writes) the bare side holds the stored rows and
unpacks each batch with the same ``unpack_bits`` / ``unpack_cells``, since a model cannot
consume those layouts without that step.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from daemon.training.args import TrainerArgs
from daemon.training.trainer import ddp
from daemon.training.trainer.data import Batch, unpack_bits, unpack_cells
from daemon.training.trainer.model import RingNet
from daemon.training.trainer.train import StopFlag, Trainer, compute_loss
from tests.support.npz_synth import write_synth_npz


def _bare(trainer: Trainer, rows: np.ndarray, batch_size: int) -> float:
    a = trainer.arrays
    torch.manual_seed(0)
    model = RingNet(trainer.arch)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _, h, w = a.input_shape
    stored = np.asarray(a.features[rows])
    x = torch.from_numpy(stored if a.layout != "dense" else stored.astype(np.float32))
    constant = None if a.constant is None else torch.from_numpy(a.constant)

    def planes(x: torch.Tensor) -> torch.Tensor:
        if a.packed:
            return unpack_bits(x, h, w).float()
        return x if constant is None else unpack_cells(x, constant).float()

    batch_all = Batch(
        x=x,
        g=torch.from_numpy(np.asarray(a.globals[rows])),
        values_mp=torch.from_numpy(np.asarray(a.values_mp[rows])),
        values=torch.from_numpy(np.asarray(a.values[rows])),
        policy=torch.from_numpy(np.asarray(a.policy_index[rows], dtype=np.int64)),
        seat=torch.from_numpy(np.asarray(a.player_to_move[rows], dtype=np.int64) - 1),
    )
    n = len(rows)
    t0 = time.perf_counter()
    for s in range(0, n, batch_size):
        sl = slice(s, s + batch_size)
        b = Batch(
            planes(batch_all.x[sl]),
            batch_all.g[sl],
            batch_all.values_mp[sl],
            batch_all.values[sl],
            batch_all.policy[sl],
            batch_all.seat[sl],
        )
        logits, values = model(b.x, b.g)
        loss, _, _ = compute_loss(logits, values, b, trainer.num_players)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layout", choices=["packbits", "cells", "dense"], default="packbits")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synth_npz(Path(tmp) / "bench.npz", args.samples, layout=args.layout)
        cfg = TrainerArgs(
            data=data,
            out=Path(tmp) / "out",
            epochs=args.repeats + 1,
            batch_size=args.batch_size,
            device="cpu",
        )
        trainer = Trainer(cfg, info=ddp.DistInfo(), emit=lambda _e: None, stop=StopFlag())
        trainer.setup()
        trainer.train_epoch(0)  # warm-up (page cache, allocator)
        _bare(trainer, trainer.split.train, args.batch_size)
        trainer_sps, bare_sps = [], []
        for r in range(args.repeats):  # interleaved: machine noise hits both sides alike
            _, seen, secs = trainer.train_epoch(r + 1)
            trainer_sps.append(seen / secs)
            bare_sps.append(_bare(trainer, trainer.split.train, args.batch_size))
    best_t, best_b = max(trainer_sps), max(bare_sps)
    print(
        json.dumps(
            {
                "bench": "trainer_throughput",
                "samples": args.samples,
                "train_samples": len(trainer.split.train),
                "batch_size": args.batch_size,
                "layout": args.layout,
                "threads": args.threads,
                "architecture": trainer.arch.as_dict(),
                "trainer_samples_per_second": round(best_t, 1),
                "bare_samples_per_second": round(best_b, 1),
                "ratio": round(best_t / best_b, 3),
                "target_ratio": 0.85,
                "device": "cpu",
                "torch_version": str(torch.__version__),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
