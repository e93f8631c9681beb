"""Prepare batches ahead on a background thread; on CUDA, copy them on a side stream.

The thread pulls host batches (memmap reads into pinned buffers), runs ``convert`` on
each (host-to-device copies and the unpack) and hands the result over through a queue
of ``depth`` items. On CUDA ``convert`` runs on a side stream and an event is recorded
after it: the consumer's stream waits on that event (a device-side wait, the host does
not block) and each tensor is marked with ``record_stream`` so the caching allocator
does not hand its memory back to the side stream while the compute stream still reads
it. An exception in the thread (bad data) is raised in the consumer at the batch where
it happened. Closing the iterator early stops and joins the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

import torch

_JOIN_TIMEOUT = 10.0
_PUT_POLL = 0.05


class HasTensors(Protocol):
    def tensors(self) -> tuple[torch.Tensor, ...]: ...


S = TypeVar("S")
B = TypeVar("B", bound=HasTensors)


@dataclass
class _Failure:
    exc: BaseException


_END = object()


class Prefetcher(Generic[S, B]):
    def __init__(
        self, source: Iterator[S], convert: Callable[[S], B], depth: int, device: torch.device
    ) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1 (got {depth})")
        self.source = source
        self.convert = convert
        self.device = device
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Generator[B]:
        self._thread = threading.Thread(target=self._run, name="batch-prefetch", daemon=True)
        self._thread.start()
        cuda = self.device.type == "cuda"
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                batch, event = cast(tuple[B, torch.cuda.Event], item)
                if cuda:
                    stream = torch.cuda.current_stream(self.device)
                    stream.wait_event(event)
                    for t in batch.tensors():
                        t.record_stream(stream)
                yield batch
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a thread waiting to put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_JOIN_TIMEOUT)

    def _run(self) -> None:
        try:
            if self.device.type == "cuda":
                self._run_cuda()
            else:
                for item in self.source:
                    if not self._put((self.convert(item), None)):
                        return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failure(exc))
        finally:
            close = getattr(self.source, "close", None)
            if close is not None:
                close()

    def _run_cuda(self) -> None:
        torch.cuda.set_device(self.device)  # the current device is per host thread
        side = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        # Work queued before the epoch (the loader's constant planes, the model) comes first.
        side.wait_stream(torch.cuda.current_stream(self.device))
        for item in self.source:
            with torch.cuda.stream(side):
                batch = self.convert(item)
                event = torch.cuda.Event()  # type: ignore[no-untyped-call]
                event.record(side)
            if not self._put((batch, event)):
                return

    def _put(self, item: object) -> bool:
        """Queue ``item`` unless the consumer has gone; False when it has."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_PUT_POLL)
                return True
            except queue.Full:
                continue
        return False
