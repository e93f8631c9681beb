"""default_threads: the CPUs this process may use, shared by the concurrent runs (torch-free)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.training.threads import default_threads, usable_cpus

REPO = Path(__file__).resolve().parents[2]


def test_split_between_concurrent_runs() -> None:
    # One CPU stays with the service; the rest is split.
    assert default_threads(1, cpus=16) == 15
    assert default_threads(3, cpus=16) == 5
    assert default_threads(1, cpus=2) == 1
    assert default_threads(4, cpus=2) == 1  # never 0
    assert default_threads(1, cpus=1) == 1
    with pytest.raises(ValueError, match="max_concurrent"):
        default_threads(0, cpus=4)


def test_usable_cpus_is_the_affinity_mask() -> None:
    assert usable_cpus() == len(os.sched_getaffinity(0))
    assert default_threads(1) == max(1, usable_cpus() - 1)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_a_process_pinned_to_one_cpu_gets_one_thread() -> None:
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from daemon.training.threads import default_threads; print(default_threads(1), default_threads(2))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.stdout.split() == ["1", "1"]
