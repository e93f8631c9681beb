"""The step loop: no host read per step, collectives on the device, precision, channels_last, compile.

A host read of a device tensor (``.item()``, ``.tolist()``, ``float(t)``, ``bool(t)``, ``.cpu()``)
is a sync on CUDA: the GPU drains its queue and waits for the host. The loop may read only at
its sync points (every ``sync_every`` steps and the epoch end); these tests count the reads on
CPU, where the code is the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from daemon.training.args import TrainerArgs
from daemon.training.exitcodes import ExitCode, TrainerError
from daemon.training.trainer import ddp, device
from daemon.training.trainer.train import StopFlag, Trainer
from tests.support.npz_synth import write_synth_npz

CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA"))]
_READS = ("item", "tolist", "__float__", "__bool__", "__int__", "cpu")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine more make every small op wait (see the bench)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trainer(tmp_path: Path, n: int = 500, **kw: Any) -> Trainer:
    data = write_synth_npz(tmp_path / "d.npz", n, layout="cells")
    opts: dict[str, Any] = {"epochs": 2, "batch_size": 8, "channels": 8, "blocks": 1, "device": "cpu"}
    opts.update(kw)
    cfg = TrainerArgs(data=data, out=tmp_path / "o", **opts)
    trainer = Trainer(cfg, info=ddp.DistInfo(), emit=lambda _e: None, stop=StopFlag())
    trainer.setup()
    return trainer


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every host read of a tensor made while the test runs, by name."""
    seen: list[str] = []
    for name in _READS:
        orig = getattr(torch.Tensor, name)

        def spy(self: torch.Tensor, *a: Any, _orig: Any = orig, _name: str = name, **k: Any) -> Any:
            seen.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    yield seen


@pytest.mark.parametrize("amp", ["off", "fp16", "bf16"])
def test_step_loop_reads_the_host_only_at_sync_points(
    tmp_path: Path, host_reads: list[str], amp: str
) -> None:
    trainer = _trainer(tmp_path, amp=amp, sync_every=10, prefetch=0)
    host_reads.clear()
    loss, seen, _ = trainer.train_epoch(1)
    steps = -(-seen // 8)
    assert steps >= 40 and math.isfinite(loss)
    # One read per sync point (every 10 steps) plus the epoch end's two; none per step.
    assert len(host_reads) <= steps // 10 + 2, (steps, host_reads)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")  # a skipped inf step
def test_unfused_optimiser_with_a_grad_scaler_would_read_every_step(
    tmp_path: Path, host_reads: list[str]
) -> None:
    """Why the trainer uses fused AdamW: GradScaler reads the inf flag on the host otherwise."""
    trainer = _trainer(tmp_path, amp="fp16", sync_every=10, prefetch=0)
    trainer.opt = torch.optim.AdamW(trainer.model.parameters(), lr=1e-3, fused=False)
    trainer.sched = torch.optim.lr_scheduler.LambdaLR(trainer.opt, lambda _s: 1.0)
    host_reads.clear()
    _, seen, _ = trainer.train_epoch(1)
    assert len(host_reads) >= -(-seen // 8)


@pytest.mark.parametrize("dev", DEVICES)
def test_every_collective_tensor_is_on_the_training_device(
    tmp_path: Path, dev: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = _trainer(tmp_path, n=200, device=dev, sync_every=3)
    devices: list[torch.device] = []
    orig = ddp.all_reduce_sum

    def spy(t: torch.Tensor, info: ddp.DistInfo, d: torch.device) -> torch.Tensor:
        devices.append(t.device)
        return orig(t, info, d)

    monkeypatch.setattr(ddp, "all_reduce_sum", spy)
    trainer.train_epoch(1)
    trainer.evaluate()
    assert len(devices) >= 3 and all(d.type == trainer.device.type for d in devices)


def test_a_collective_on_the_wrong_device_is_refused() -> None:
    cpu = torch.zeros(2)
    with pytest.raises(ValueError, match="nccl backend needs it on cuda:0"):
        ddp.all_reduce_sum(cpu, ddp.DistInfo(), torch.device("cuda", 0))
    ddp.check_collective_tensor(cpu, torch.device("cpu"))


def test_nan_is_caught_at_the_next_sync_point(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, sync_every=5, debug_nan_at_step=7, prefetch=0)
    with pytest.raises(TrainerError) as err:
        trainer.train_epoch(1)
    assert err.value.code == ExitCode.DIVERGED
    assert "steps 5..9" in err.value.message and trainer.global_step == 10


def test_stop_flag_stops_a_single_process_at_once(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, sync_every=1000)
    trainer.stop.set()
    _, seen, _ = trainer.train_epoch(1)
    assert seen == 8 and trainer.global_step == 1


def test_precision_choices() -> None:
    cpu = torch.device("cpu")
    assert device.resolve_precision("auto", cpu).dtype is None  # float32 on CPU
    assert device.resolve_precision("off", cpu).name == "off"
    assert device.resolve_precision("bf16", cpu).dtype == torch.bfloat16
    fp16 = device.resolve_precision("fp16", cpu)
    assert fp16.dtype == torch.float16 and fp16.needs_scaler
    with pytest.raises(TrainerError, match="expected auto"):
        device.resolve_precision("fp8", cpu)


@pytest.mark.skipif(not CUDA, reason="no CUDA")
def test_auto_precision_on_this_gpu() -> None:
    gpu = torch.device("cuda", 0)
    bf16 = torch.cuda.get_device_capability(0)[0] >= 8
    assert device.resolve_precision("auto", gpu).name == ("bf16" if bf16 else "fp16")


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_epoch_learns_and_checkpoints_float32(tmp_path: Path, amp: str) -> None:
    trainer = _trainer(tmp_path, n=400, amp=amp, epochs=3, patience=5)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    first, _, _ = trainer.train_epoch(1)
    second, _, _ = trainer.train_epoch(2)
    assert math.isfinite(first) and second < first
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(v.dtype != torch.float16 for v in after.values())  # the weights stay float32
    assert trainer.scaler.is_enabled() == (amp == "fp16")


def test_channels_last_model_and_inputs_and_a_standard_checkpoint(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, n=300, channels_last=True)
    conv = trainer.model.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    batch = next(iter(trainer.train_loader.epoch(1)))
    assert batch.x.is_contiguous(memory_format=torch.channels_last)
    loss, _, _ = trainer.train_epoch(1)
    assert math.isfinite(loss)
    state = trainer._host_state()
    assert all(v.is_contiguous() for v in state.values())


def test_compile_wraps_the_training_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile on the trainer's net, traced by dynamo; the ``eager`` backend skips the C++
    code generation (minutes here), which the soak test below runs."""
    real = torch.compile

    def eager(model: Any, **kw: Any) -> Any:
        return real(model, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", eager)
    trainer = _trainer(tmp_path, n=200, compile=True)
    assert trainer.net is not trainer.model and hasattr(trainer.net, "_orig_mod")
    loss, _, _ = trainer.train_epoch(1)
    assert math.isfinite(loss)
    assert not any(k.startswith("_orig_mod") for k in trainer._host_state())


@pytest.mark.soak
def test_compile_with_the_default_backend(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, n=400, compile=True)
    loss, _, _ = trainer.train_epoch(1)
    assert math.isfinite(loss)
