"""How many CPU threads one trainer gets (torch-free: the service computes it for ``--threads``)."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (cgroup cpusets, ``taskset``), else the count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(max_concurrent: int, cpus: int | None = None) -> int:
    """Intra-op threads per trainer when ``max_concurrent`` trainers share this machine's CPUs (>= 1).

    One CPU stays with the service (poll, export workers, the trainer's loader thread), the rest
    is split between the concurrent runs. Torch's barrier threads spin: one descheduled thread
    stalls every step. Measured on 2 loaded cores (load 5-7), the demo's model trained at 2,215
    samples/s with 1 thread and under 300 with 2; without a split, concurrent runs oversubscribe
    the cores the same way.
    """
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be >= 1 (got {max_concurrent})")
    n = usable_cpus() if cpus is None else cpus
    return max(1, (n - 1) // max_concurrent)
