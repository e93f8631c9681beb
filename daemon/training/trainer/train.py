"""The training loop: AdamW + warm-up/cosine, clipping, mixed precision, DDP, early stopping.

Every rank runs the same loop; rank 0 alone prints progress and writes the checkpoint.
No host sync inside the step loop: the loss is summed on the device and read every
``--sync-every`` steps (the NaN check) and at the epoch end; the optimiser is fused
AdamW, which takes GradScaler's inf flag on the device (the unfused path reads it on
the host every step), and gradient clipping never reads the norm back. Under DDP the
stop flag (SIGTERM on any rank) and the NaN flag are all-reduced as one device tensor
every ``--sync-every`` steps and at the epoch end, so every rank stops at the same step.
The next batch is prepared by the loader's background thread meanwhile (data.py).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from daemon.npz.reader import open_training_file
from daemon.training.args import TrainerArgs
from daemon.training.exitcodes import ExitCode, TrainerError
from daemon.training.outcome import DONE_CHECKPOINT_BYTES
from daemon.training.trainer import ddp
from daemon.training.trainer.checkpoint import (
    CHECKPOINT_NAME,
    parent_architecture,
    read_checkpoint,
    save_checkpoint,
)
from daemon.training.trainer.checkpoint import warm_start as load_parent
from daemon.training.trainer.data import Batch, BatchLoader, majority_baseline, split_by_game
from daemon.training.trainer.device import (
    configure_backends,
    fused_optimizer_ok,
    pick_device,
    resolve_precision,
)
from daemon.training.trainer.model import Architecture, RingNet

Emit = Callable[[dict[str, Any]], None]

__all__ = ["StopFlag", "Trainer", "compute_loss", "lr_lambda", "pick_device"]


class StopFlag:
    """Set from the SIGTERM handler; checked between steps."""

    def __init__(self) -> None:
        self.is_set = False

    def set(self) -> None:
        self.is_set = True


def lr_lambda(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_fraction))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def compute_loss(
    logits: torch.Tensor, values: torch.Tensor, b: Batch, num_players: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, policy, value) loss; policy targets of -1 are ignored, values only for real seats."""
    valid = (b.policy >= 0).to(torch.float32)
    ce = F.cross_entropy(logits.float(), b.policy.clamp(min=0), reduction="none")
    p_loss = (ce * valid).sum() / valid.sum().clamp(min=1.0)
    v_loss = F.mse_loss(values[:, :num_players].float(), b.values_mp[:, :num_players])
    return p_loss + v_loss, p_loss, v_loss


class Trainer:
    def __init__(self, cfg: TrainerArgs, *, info: ddp.DistInfo, emit: Emit, stop: StopFlag) -> None:
        self.cfg = cfg
        self.info = info
        self.emit = emit
        self.stop = stop
        self.global_step = 0

    def setup(self) -> None:
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.seed)
        self.device = pick_device(cfg.device, info)
        self.precision = resolve_precision(cfg.amp, self.device)
        configure_backends(self.device)
        self.arrays = open_training_file(cfg.data, allow_legacy_pickle=cfg.allow_legacy_pickle)
        a = self.arrays
        self.num_players = int(a.meta["num_players"])
        parent_ckpt = read_checkpoint(cfg.init) if cfg.init is not None else None
        parent_arch = parent_architecture(parent_ckpt) if parent_ckpt else {}
        c, h, _ = a.input_shape
        self.arch = Architecture(
            channels=cfg.channels or int(parent_arch.get("channels", 32)),
            blocks=cfg.blocks or int(parent_arch.get("blocks", 2)),
            in_planes=c,
            num_globals=a.num_globals,
            policy_size=int(a.meta["policy_size"]),
            grid=h,
        )
        self.model: nn.Module = RingNet(self.arch)
        if parent_ckpt is not None and cfg.init is not None:
            load_parent(self.model, self.arch, parent_ckpt, cfg.init)
        self.model.to(self.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.split = split_by_game(a.game_ids)
        _, self.baseline = majority_baseline(a.policy_index, self.split)
        ddp.init(info, self.device)
        self.net: nn.Module = self.model
        if info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:  # after DDP: its optimiser splits the graph at the bucket boundaries
            self.net = cast(nn.Module, torch.compile(self.net))
        self.train_loader = BatchLoader(
            a, self.split.train, cfg.batch_size, self.device, shuffle=True, seed=cfg.seed,
            rank=info.rank, world=info.world, prefetch=cfg.prefetch, channels_last=cfg.channels_last,
        )  # fmt: skip
        self.val_loader = BatchLoader(
            a, self.split.val, cfg.batch_size, self.device, shuffle=False, seed=cfg.seed,
            rank=info.rank, world=info.world, equal_shards=False, prefetch=cfg.prefetch,
            channels_last=cfg.channels_last,
        )  # fmt: skip
        steps = max(1, -(-self.train_loader.num_samples() // cfg.batch_size)) * cfg.epochs
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            fused=fused_optimizer_ok(self.device) or None,
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(steps, cfg.warmup_fraction))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.needs_scaler)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.dtype)

    # -- one epoch ---------------------------------------------------------
    def _step(self, b: Batch) -> torch.Tensor:
        """One optimiser step; the loss stays on the device (reading it would sync)."""
        with self.autocast():
            logits, values = self.net(b.x, b.g)
        loss, _, _ = compute_loss(logits, values, b, self.num_players)
        if self.cfg.debug_nan_at_step is not None and self.global_step >= self.cfg.debug_nan_at_step:
            loss = loss * float("nan")
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        self.scaler.unscale_(self.opt)  # no-op without fp16
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.global_step += 1
        return loss.detach()

    def _agree(self, loss_sum: torch.Tensor, first_step: int) -> bool:
        """The sync point: raise DIVERGED on a non-finite loss sum; True when any rank must stop.

        One device tensor ``[loss_sum not finite, stop]``, all-reduced under DDP, read once.
        """
        stop = torch.full((), float(self.stop.is_set), dtype=torch.float64, device=self.device)
        flags = torch.stack([(~torch.isfinite(loss_sum)).to(torch.float64), stop])
        bad, stop_any = ddp.all_reduce_sum(flags, self.info, self.device).tolist()
        if bad:
            raise TrainerError(
                ExitCode.DIVERGED,
                f"non-finite loss in steps {first_step}..{self.global_step - 1} (checked every "
                f"{self.cfg.sync_every} steps)",
            )
        if stop_any:
            self.stop.set()
        return bool(stop_any)

    def train_epoch(self, epoch: int) -> tuple[float, int, float]:
        """Returns (mean loss over all ranks, samples on this rank, seconds); raises DIVERGED."""
        self.net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        seen, steps, t0 = 0, 0, time.perf_counter()
        checked_from = self.global_step
        last_beat = time.monotonic()
        every = self.cfg.sync_every
        with contextlib.closing(self.train_loader.epoch(epoch)) as batches:
            for b in batches:
                n = len(b)
                loss_sum += self._step(b).to(torch.float64) * n
                seen += n
                steps += 1
                if steps % every == 0:
                    if self._agree(loss_sum, checked_from):
                        break
                    checked_from = self.global_step
                elif not self.info.enabled and self.stop.is_set:  # alone: stop at once
                    break
                if time.monotonic() - last_beat >= self.cfg.heartbeat_interval:
                    last_beat = time.monotonic()
                    beat = {"event": "heartbeat", "epoch": epoch, "step": self.global_step, "samples": seen}
                    self.emit(beat)
        self._agree(loss_sum, checked_from)
        totals = torch.stack([loss_sum, torch.full_like(loss_sum, seen)])
        total, count = ddp.all_reduce_sum(totals, self.info, self.device).tolist()
        return total / max(1.0, count), seen, time.perf_counter() - t0

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        # policy loss * rows, value loss (seats) * rows, mover value loss * rows, correct, policy rows
        s = torch.zeros(5, dtype=torch.float64, device=self.device)
        rows = 0
        with contextlib.closing(self.val_loader.epoch(0)) as batches:
            for b in _until(batches, self.stop):
                with self.autocast():
                    logits, values = self.model(b.x, b.g)
                _, p_loss, v_loss = compute_loss(logits, values, b, self.num_players)
                mover = values.float().gather(1, b.seat[:, None]).squeeze(1)
                valid = b.policy >= 0
                n_pol = valid.sum().to(torch.float64)
                n = len(b)
                correct = ((logits.argmax(1) == b.policy) & valid).sum().to(torch.float64)
                mover_loss = F.mse_loss(mover, b.values).double() * n
                s += torch.stack([p_loss.double() * n_pol, v_loss.double() * n, mover_loss, correct, n_pol])
                rows += len(b)
        tail = torch.tensor([rows, float(self.stop.is_set)], dtype=torch.float64, device=self.device)
        p_sum, v_sum, mover_sum, correct, n_pol, n, stop = ddp.all_reduce_sum(
            torch.cat([s, tail]), self.info, self.device
        ).tolist()
        if stop > 0:
            self.stop.set()
        n_pol, n = max(1.0, n_pol), max(1.0, n)
        return {
            "val_loss": p_sum / n_pol + v_sum / n,
            "val_value_loss": v_sum / n,
            "val_value_loss_mover": mover_sum / n,
            "policy_accuracy": correct / n_pol,
        }

    # -- whole run ---------------------------------------------------------
    def run(self) -> ExitCode:
        cfg = self.cfg
        self.emit(self._start_event())
        best: dict[str, torch.Tensor] | None = None
        best_val, best_acc, bad_epochs = math.inf, 0.0, 0
        losses: list[dict[str, float | int]] = []
        epochs_done = 0
        for epoch in range(1, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            train_loss, seen, secs = self.train_epoch(epoch)
            if self.stop.is_set:
                break
            ev = self.evaluate()
            if self.stop.is_set:
                break
            if not math.isfinite(ev["val_loss"]):
                raise TrainerError(ExitCode.DIVERGED, f"non-finite validation loss at epoch {epoch}")
            epochs_done = epoch
            losses.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": ev["val_loss"],
                    "policy_accuracy": ev["policy_accuracy"],
                }
            )
            improved = ev["val_loss"] < best_val - 1e-6
            if improved:
                best_val, best_acc, bad_epochs = ev["val_loss"], ev["policy_accuracy"], 0
                best = self._host_state()
            else:
                bad_epochs += 1
            self.emit(
                {
                    "event": "epoch",
                    "epoch": epoch,
                    "epochs": cfg.epochs,
                    "train_loss": train_loss,
                    **ev,
                    "baseline_policy_accuracy": self.baseline,
                    "lr": self.sched.get_last_lr()[0],
                    "samples_per_second": seen * self.info.world / max(secs, 1e-9),
                    "improved": improved,
                    "epoch_seconds": time.perf_counter() - t_epoch,
                }
            )
            if bad_epochs >= cfg.patience:
                self.emit({"event": "early_stop", "epoch": epoch, "best_val_loss": best_val})
                break
        interrupted = self.stop.is_set
        state = best if best is not None else self._host_state()
        meta = self._metadata(epochs_done, losses, best_val, best_acc, interrupted)
        path: Path | None = None
        if self.info.is_main:
            path = save_checkpoint(cfg.out / CHECKPOINT_NAME, state, meta)
        self.emit(
            {
                "event": "done",
                "checkpoint": str(path) if path else None,
                DONE_CHECKPOINT_BYTES: path.stat().st_size if path else None,
                "peak_gpu_memory_bytes": (
                    torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else None
                ),
                "interrupted": interrupted,
                "epochs": epochs_done,
                "best_val_loss": meta["best_val_loss"],
                "val_policy_accuracy": best_acc,
                "baseline_policy_accuracy": self.baseline,
            }
        )
        return ExitCode.INTERRUPTED if interrupted else ExitCode.OK

    def _host_state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the weights in the standard (NCHW) layout, whatever the training layout."""
        return {
            k: v.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
            for k, v in self.model.state_dict().items()
        }

    def _start_event(self) -> dict[str, Any]:
        return {
            "event": "start",
            "data": str(self.cfg.data),
            "samples": self.arrays.n,
            "train_samples": len(self.split.train),
            "val_samples": len(self.split.val),
            "val_is_train": self.split.val_is_train,
            "device": str(self.device),
            "amp": self.precision.name,
            "channels_last": self.cfg.channels_last,
            "compile": self.cfg.compile,
            "prefetch": self.cfg.prefetch,
            "threads": torch.get_num_threads(),
            "world_size": self.info.world,
            "architecture": self.arch.as_dict(),
            "legacy": self.arrays.legacy,
            "run_id": self.cfg.run_id,
        }

    def _metadata(
        self,
        epochs: int,
        losses: list[dict[str, float | int]],
        best_val: float,
        best_acc: float,
        interrupted: bool,
    ) -> dict[str, Any]:
        a, cfg = self.arrays, self.cfg
        return {
            "config_key": str(a.meta.get("config_key", "")),
            "board_type": str(a.meta.get("board_type", "")),
            "num_players": self.num_players,
            "architecture": self.arch.as_dict(),
            "input_shape": list(a.input_shape),
            "policy_size": self.arch.policy_size,
            "parent": cfg.parent,
            "data_hash": cfg.data_hash,
            "fencing_token": cfg.fencing_token,
            "run_id": cfg.run_id,
            "epochs": epochs,
            "losses": losses,
            "best_val_loss": best_val if math.isfinite(best_val) else None,
            "val_policy_accuracy": best_acc,
            "baseline_policy_accuracy": self.baseline,
            "samples": a.n,
            "device": str(self.device),
            "torch_version": str(torch.__version__),
            "created_at": datetime.now(UTC).isoformat(),
            "interrupted": interrupted,
            "legacy_data": a.legacy,
        }


def _until(batches: Iterator[Batch], stop: StopFlag) -> Iterator[Batch]:
    for b in batches:
        if stop.is_set:
            return
        yield b
