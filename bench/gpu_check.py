"""The GPU check behind ``bench/gpu_check.sh``: one script, under 5 minutes on one GPU, ONE JSON object.

1. a real export: ``daemon.selfplay_sim.write_games`` + ``daemon.export.job.run_export``
   (``square8_2p``, cells layout, ``--games`` games);
2. ``bench.trainer_throughput`` on ``cuda`` with AMP on (``--amp auto``: bf16 where the GPU has
   it) and channels_last: trainer vs the bare loop, samples/s and ratio per batch size, and the
   bench process's peak ``torch.cuda.max_memory_allocated``;
3. a run of the real trainer through the service's runner (``TrainerRunner``) launched by
   torchrun with ``--nproc-per-node`` = the visible GPUs (>= 1): exit, reason, world size,
   samples/s per epoch, the trainer's peak GPU memory;
4. throughout, ``nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used
   --format=csv,noheader,nounits -lms 200`` in the background: utilisation while the trainer
   rounds ran, while the bare rounds ran and during the DDP run; the peak memory.used.

Without a GPU (no ``nvidia-smi`` or no CUDA device visible to torch) it prints
``{"bench": "gpu_check", "error": "no GPU visible"}`` and exits 0. A failed step is recorded
as ``{"error": ...}`` under its key; the other steps still run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NO_GPU: dict[str, Any] = {"bench": "gpu_check", "error": "no GPU visible"}
SMI_QUERY = "timestamp,index,utilization.gpu,memory.used"
SMI_PERIOD_MS = 200


@dataclass(frozen=True)
class Sample:
    t: float  # epoch seconds
    index: int
    util: float  # percent
    mem_mib: float


def parse_smi_line(line: str) -> Sample | None:
    """One ``timestamp, index, utilization.gpu, memory.used`` CSV line, or None (N/A, noise)."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 4:
        return None
    try:
        t = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()  # local time, like time.time()
        return Sample(t, int(parts[1]), float(parts[2]), float(parts[3]))
    except ValueError:
        return None


class SmiSampler:
    """``nvidia-smi -lms`` in the background; ``stop()`` returns the parsed samples."""

    def __init__(self, period_ms: int = SMI_PERIOD_MS) -> None:
        self.period_ms = period_ms
        self.samples: list[Sample] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        cmd = ["nvidia-smi", f"--query-gpu={SMI_QUERY}", "--format=csv,noheader,nounits"]
        cmd += ["-lms", str(self.period_ms)]
        if shutil.which("stdbuf"):  # line-buffered: nothing lost in a buffer when it is stopped
            cmd = ["stdbuf", "-oL", *cmd]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_smi_line(line)
            if sample is not None:
                self.samples.append(sample)

    def stop(self) -> list[Sample]:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return list(self.samples)


def summarize(
    samples: Sequence[Sample], spans: Sequence[tuple[float, float]], index: int | None = None
) -> Any:
    """Utilisation (mean, median, min) and peak memory.used of the samples inside any span."""
    inside = [
        s for s in samples if (index is None or s.index == index) and any(a <= s.t <= b for a, b in spans)
    ]
    if not inside:
        return {"samples": 0}
    util = [s.util for s in inside]
    return {
        "samples": len(inside),
        "utilization_mean": round(statistics.fmean(util), 1),
        "utilization_median": round(statistics.median(util), 1),
        "utilization_min": round(min(util), 1),
        "memory_used_max_mib": max(s.mem_mib for s in inside),
    }


def visible_gpus() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:
        return 0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's device numbers in nvidia-smi's order
    return env


def bench_gpu_index(env: dict[str, str]) -> int:
    """nvidia-smi's index of the bench's ``cuda:0`` (the first of CUDA_VISIBLE_DEVICES, in PCI order)."""
    first = env.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0


def run_bench(data: Path, args: argparse.Namespace, device: str = "cuda") -> dict[str, Any]:
    """``bench.trainer_throughput`` in its own process (its own CUDA context and peak memory)."""
    cmd = [sys.executable, "-m", "bench.trainer_throughput", "--device", device, "--amp", "auto"]
    cmd += ["--channels-last", "--data", str(data), "--batch-sizes", args.batch_sizes]
    cmd += ["--repeats", str(args.repeats)] + (["--compile"] if args.compile else [])
    try:
        p = subprocess.run(
            cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=args.bench_timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.bench_timeout} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"error": f"exit {p.returncode}", "stderr_tail": p.stderr.splitlines()[-8:]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def run_ddp(
    data: Path, tmp: Path, gpus: int, args: argparse.Namespace, device: str = "cuda"
) -> dict[str, Any]:
    """The real trainer through ``TrainerRunner`` + torchrun, ``gpus`` processes (``device`` cpu: tests)."""
    from daemon.training.args import TrainerArgs
    from daemon.training.runner import TrainerRunner

    runner = TrainerRunner(
        timeout=args.ddp_timeout,
        grace=10.0,
        heartbeat_timeout=120.0,
        state_dir=tmp / "state",
        env=_env(),
        nproc_per_node=gpus,
        launcher="torchrun",
        cwd=ROOT,
    )
    targs = TrainerArgs(
        data=data,
        out=tmp / "ddp_out",
        epochs=args.ddp_epochs,
        batch_size=int(args.batch_sizes.split(",")[-1]),
        device=device,
        amp="auto",
        channels_last=True,
        heartbeat_interval=5.0,
        run_id="gpu-check-ddp",
    )
    events: list[dict[str, Any]] = []
    t0 = time.time()
    outcome = await runner.run(targs, on_progress=events.append, run_id="gpu-check-ddp")
    start = next((e for e in events if e.get("event") == "start"), {})
    done = next((e for e in events if e.get("event") == "done"), {})
    return {
        "command": runner.command(targs)[:8],
        "exit_name": outcome.exit_name,
        "reason": outcome.reason,
        "ok": outcome.ok,
        "seconds": round(outcome.duration, 1),
        "world_size": start.get("world_size"),
        "device": start.get("device"),
        "amp": start.get("amp"),
        "epochs": [
            {k: e.get(k) for k in ("epoch", "train_loss", "val_loss", "samples_per_second", "epoch_seconds")}
            for e in events
            if e.get("event") == "epoch"
        ],
        "peak_gpu_memory_bytes": done.get("peak_gpu_memory_bytes"),
        "stderr_tail": outcome.stderr_tail[-5:] if not outcome.ok else [],
        "span": (t0, time.time()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--games", type=int, default=3000, help="simulated games to export (~55 samples each)")
    p.add_argument(
        "--batch-sizes", default="512,1024", help="the bench's batch sizes; the DDP run uses the last"
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also torch.compile in the bench (adds ~1 min)")
    p.add_argument("--ddp-epochs", type=int, default=2)
    p.add_argument("--bench-timeout", type=float, default=150.0)
    p.add_argument("--ddp-timeout", type=float, default=90.0)
    args = p.parse_args(argv)
    gpus = visible_gpus()
    if gpus < 1:
        sys.stdout.write(json.dumps(NO_GPU) + "\n")
        return 0
    from bench.trainer_throughput import export_file
    from daemon.logs import configure_logging

    configure_logging("WARNING", json=True)  # stdout carries only the result object
    t0 = time.time()
    result: dict[str, Any] = {"bench": "gpu_check", "visible_gpus": gpus}
    sampler = SmiSampler()
    sampler.start()
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as d:
            tmp = Path(d)
            t = time.perf_counter()
            data = export_file(tmp, args.games)
            result["export"] = {"games": args.games, "bytes": data.stat().st_size}
            result["export"]["seconds"] = round(time.perf_counter() - t, 1)
            result["trainer_bench"] = run_bench(data, args)
            try:
                result["ddp"] = asyncio.run(run_ddp(data, tmp, gpus, args))
            except Exception as exc:  # recorded; the rest of the report still prints
                result["ddp"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        samples = sampler.stop()
    bench = result["trainer_bench"]
    phases = bench.get("phases", [])
    spans = {
        side: [(ph["start"], ph["end"]) for ph in phases if ph["side"] == side]
        for side in ("trainer", "bare")
    }
    ddp_span = result["ddp"].pop("span", None)
    result["utilization"] = {
        "trainer": summarize(samples, spans["trainer"], index=bench_gpu_index(_env())),
        "bare": summarize(samples, spans["bare"], index=bench_gpu_index(_env())),
        "ddp": summarize(samples, [ddp_span]) if ddp_span else {"samples": 0},
    }
    bench.pop("phases", None)
    result["samples_per_second"] = {
        "trainer": bench.get("trainer_samples_per_second"),
        "bare": bench.get("bare_samples_per_second"),
        "ratio": bench.get("ratio"),
        "batch_size": bench.get("batch_size"),
        "precision": bench.get("precision"),
    }
    result["peak_gpu_memory"] = {
        "bench_allocated_bytes": bench.get("peak_gpu_memory_bytes"),
        "ddp_trainer_allocated_bytes": result["ddp"].get("peak_gpu_memory_bytes"),
        "nvidia_smi_used_max_mib": max((s.mem_mib for s in samples), default=None),
    }
    result["smi_samples"] = len(samples)
    result["seconds"] = round(time.time() - t0, 1)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
