"""The prefetching loader: same batches as without it, bounded look-ahead, errors and early stop."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from daemon.npz.reader import open_training_file
from daemon.training.exitcodes import TrainerError
from daemon.training.trainer.data import Batch, BatchLoader, HostBatch, split_by_game
from daemon.training.trainer.prefetch import Prefetcher
from tests.support.npz_synth import write_synth_npz

CUDA = torch.cuda.is_available()


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "batch-prefetch"]


def _wait(cond: object, bound: float = 10.0) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return True
        time.sleep(0.01)
    return False


def _loader(tmp_path: Path, layout: str, prefetch: int, device: str = "cpu") -> BatchLoader:
    a = open_training_file(write_synth_npz(tmp_path / f"{layout}.npz", 700, layout=layout))  # type: ignore[arg-type]
    split = split_by_game(a.game_ids)
    return BatchLoader(a, split.train, 32, torch.device(device), shuffle=True, seed=5, prefetch=prefetch)


@pytest.mark.parametrize("layout", ["dense", "packbits", "cells"])
def test_prefetched_batches_equal_inline_batches(tmp_path: Path, layout: str) -> None:
    inline = [vars(b) for b in _loader(tmp_path, layout, 0).epoch(2)]
    ahead = [vars(b) for b in _loader(tmp_path, layout, 3).epoch(2)]
    assert len(inline) == len(ahead) > 5
    for a, b in zip(inline, ahead, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _wait(lambda: not _prefetch_threads())


@pytest.mark.skipif(not CUDA, reason="no CUDA")
def test_cuda_batches_equal_cpu_batches(tmp_path: Path) -> None:
    """Pinned buffers, non-blocking copies on the side stream, the compute stream waiting on it."""
    cpu = [vars(b) for b in _loader(tmp_path, "cells", 2).epoch(1)]
    loader = _loader(tmp_path, "cells", 2, device="cuda")
    assert loader.pin
    gpu = [{k: v.cpu() for k, v in vars(b).items()} for b in loader.epoch(1)]
    for a, b in zip(cpu, gpu, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_host_batches_are_three_tensors(tmp_path: Path) -> None:
    loader = _loader(tmp_path, "cells", 0)
    hb = next(iter(loader.host_batches(0)))
    assert isinstance(hb, HostBatch)
    assert hb.x.dtype == torch.int16 and hb.f.dtype == torch.float32 and hb.i.dtype == torch.int64
    assert hb.f.shape == (32, loader.arrays.num_globals + 5) and hb.i.shape == (32, 2)
    assert not hb.x.is_pinned()  # CPU training: nothing to pin


class _Item:
    def __init__(self, i: int) -> None:
        self.i = i
        self.t = torch.tensor([i])

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.t,)


def test_look_ahead_is_bounded_by_the_depth() -> None:
    pulled = []

    def source() -> Iterator[int]:
        for i in range(100):
            pulled.append(i)
            yield i

    p: Prefetcher[int, _Item] = Prefetcher(source(), _Item, 3, torch.device("cpu"))
    it = iter(p)
    assert next(it).i == 0
    # The thread fills the queue (3) and holds one more, waiting to put it; no further.
    assert _wait(lambda: p._queue.full() and len(pulled) == 5)
    assert [next(it).i for _ in range(4)] == [1, 2, 3, 4]
    it.close()  # type: ignore[attr-defined]
    assert _wait(lambda: not _prefetch_threads())
    assert len(pulled) < 100


def test_producer_error_is_raised_in_the_consumer_in_order() -> None:
    def boom() -> Iterator[int]:
        yield 0
        yield 1
        raise ValueError("row 2 is bad")

    got = []
    with pytest.raises(ValueError, match="row 2 is bad"):
        for item in Prefetcher(boom(), _Item, 2, torch.device("cpu")):
            got.append(item.i)
    assert got == [0, 1]
    assert _wait(lambda: not _prefetch_threads())


def test_breaking_out_of_an_epoch_stops_the_thread(tmp_path: Path) -> None:
    loader = _loader(tmp_path, "cells", 2)
    epoch = loader.epoch(1)
    first: Batch = next(epoch)
    assert len(first) == 32 and _prefetch_threads()
    epoch.close()
    assert _wait(lambda: not _prefetch_threads())


def test_bad_cells_with_prefetch_are_bad_data(tmp_path: Path) -> None:
    good = _loader(tmp_path, "cells", 2)
    cells = np.asarray(good.arrays.features).copy()
    cells[good.indices[-1], 0] = 999
    bad = dataclasses.replace(good.arrays, features=cells)
    loader = BatchLoader(bad, good.indices, 32, torch.device("cpu"), shuffle=True, prefetch=2)
    with pytest.raises(TrainerError, match="out of range"):
        for _ in loader.epoch(0):
            pass
    assert _wait(lambda: not _prefetch_threads())
