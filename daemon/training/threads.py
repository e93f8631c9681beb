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

    Without a split every trainer would start one thread per CPU, and concurrent runs would
    oversubscribe the cores (each slower than running alone).
    """
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be >= 1 (got {max_concurrent})")
    return max(1, (usable_cpus() if cpus is None else cpus) // max_concurrent)
