"""bench/gpu_check.sh without a GPU, and its nvidia-smi sampling (the GPU run itself needs a GPU)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

from bench.gpu_check import (
    NO_GPU,
    Sample,
    SmiSampler,
    bench_gpu_index,
    parse_smi_line,
    run_bench,
    run_ddp,
    summarize,
)
from bench.trainer_throughput import export_file

REPO = Path(__file__).resolve().parents[2]
FAKE_SMI = """#!/usr/bin/env bash
# Fake nvidia-smi: three samples for GPU 0 and 1 (query mode), then runs until stopped.
if [[ "$*" != *--query-gpu=* ]]; then echo "GPU 0: Fake"; exit 0; fi
for u in 10 50 90; do
  ts=$(date +"%Y/%m/%d %H:%M:%S.%3N")
  echo "$ts, 0, $u, $((u * 100))"
  echo "$ts, 1, N/A, [N/A]"
done
exec sleep 600
"""


def _fake_smi(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _script(path_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = path_env
    return subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
@pytest.mark.parametrize("with_smi", [False, True])
def test_no_gpu_prints_one_json_error_and_exits_0(tmp_path: Path, with_smi: bool) -> None:
    """No nvidia-smi, or nvidia-smi but no CUDA device for torch: the same single JSON line."""
    base = "/usr/local/bin:/usr/bin:/bin:" + os.path.dirname(sys.executable)
    p = _script(f"{_fake_smi(tmp_path)}:{base}" if with_smi else base)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == NO_GPU == {
        "bench": "gpu_check",
        "error": "no GPU visible",
    }


def test_parse_smi_lines() -> None:
    s = parse_smi_line("2026/12/02 14:00:00.250, 1, 87, 1234\n")
    assert s is not None and (s.index, s.util, s.mem_mib) == (1, 87.0, 1234.0)
    assert s.t == datetime(2026, 12, 2, 14, 0, 0, 250000).timestamp()
    for bad in ("", "2026/12/02 14:00:00.250, 0, [N/A], 5", "GPU 0: H200", "a, b, c, d"):
        assert parse_smi_line(bad) is None


def test_summarize_only_the_samples_in_the_spans() -> None:
    samples = [
        Sample(t, i, u, m) for t, i, u, m in [(1, 0, 10, 5), (2, 0, 90, 7), (2, 1, 0, 9), (5, 0, 50, 8)]
    ]
    assert summarize(samples, [(1.5, 2.5)], index=0) == {
        "samples": 1,
        "utilization_mean": 90.0,
        "utilization_median": 90.0,
        "utilization_min": 90.0,
        "memory_used_max_mib": 7,
    }
    both = summarize(samples, [(0, 2), (4, 6)])
    assert both["samples"] == 4 and both["memory_used_max_mib"] == 9
    assert summarize(samples, [(10, 11)]) == {"samples": 0}


def test_sampler_reads_a_running_nvidia_smi_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{_fake_smi(tmp_path)}:{os.environ['PATH']}")
    t0 = time.time()
    sampler = SmiSampler(period_ms=200)
    sampler.start()
    deadline = time.monotonic() + 20
    while len(sampler.samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    samples = sampler.stop()
    assert [s.util for s in samples] == [10.0, 50.0, 90.0]  # the N/A lines of GPU 1 are skipped
    assert all(s.index == 0 and t0 - 2 <= s.t <= time.time() + 1 for s in samples)
    assert sampler._proc is not None and sampler._proc.poll() is not None


def test_bench_gpu_is_the_first_visible_device() -> None:
    assert bench_gpu_index({}) == 0
    assert bench_gpu_index({"CUDA_VISIBLE_DEVICES": "3,1"}) == 3
    assert bench_gpu_index({"CUDA_VISIBLE_DEVICES": "GPU-1234"}) == 0  # a UUID: unknown, assume 0


@pytest.mark.slow
def test_the_bench_and_the_torchrun_steps_run_on_cpu(tmp_path: Path) -> None:
    """The GPU check's two steps with ``device=cpu`` (gloo): the orchestration, not the GPU figures."""
    data = export_file(tmp_path, 20)
    args = argparse.Namespace(
        batch_sizes="128", repeats=1, compile=False, bench_timeout=100.0, ddp_epochs=1, ddp_timeout=100.0
    )
    bench = run_bench(data, args, device="cpu")
    assert bench["bench"] == "trainer_throughput" and bench["ratio"] > 0, bench
    assert bench["architecture"]["in_planes"] == 65 and bench["architecture"]["policy_size"] == 3717
    ddp = asyncio.run(run_ddp(data, tmp_path, 2, args, device="cpu"))
    assert ddp["ok"] and ddp["world_size"] == 2 and ddp["reason"] in ("ok", "teardown_crash"), ddp
    assert "torch.distributed.run" in ddp["command"] and len(ddp["epochs"]) == 1
    assert ddp["epochs"][0]["samples_per_second"] > 0
