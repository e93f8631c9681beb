"""Registration and pull cost against same-run baselines.

``python -m bench registry_register [--workers 3] [--per-worker 20] [--file-mib 1] [--pull-mib 100]``
prints one JSON object:

- ``register``: ``workers`` processes each register ``per_worker`` distinct files at once, into
  one SQLite registry and into one PostgreSQL registry (a real server started here, fsync on),
  against the baseline of the same processes making a durable copy of the same bytes (temp +
  fsync + rename + dir fsync). ``rounds`` rounds, the three kinds interleaved in each, so load
  from elsewhere on the machine hits them alike. Figures: per-registration latency p50/p95
  (over all rounds) and throughput; ratios registry / copy as the median of the per-round
  ratios (target: registration <= 3x a durable copy, on p50 latency).
- ``pull``: ``ModelRegistry.pull`` of a ``pull_mib`` object (sha256-verified, fsynced, renamed)
  vs ``cp`` of the same file, vs ``cp`` + ``sync -f`` (durable), and vs ``cp`` + ``sha256sum``
  of the copy (a verified copy with shell tools); page cache warm; median of 5 (target: pull
  <= 1.5x cp). A verified copy cannot beat one sha256 pass over the bytes, which alone costs
  more than ``cp`` (copy_file_range, in the kernel) on most machines.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from daemon.registry import ModelRegistry
from daemon.registry.stores.atomic import fsync_dir
from tests.support.postgres_server import PostgresServer

REGISTER_TARGET = 3.0
PULL_TARGET = 1.5


def _durable_copy(src: Path, out: Path) -> None:
    tmp = out.with_suffix(".tmp")
    with src.open("rb") as f, tmp.open("wb") as dst:
        while chunk := f.read(8 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, out)
    fsync_dir(out.parent)


def _worker(
    kind: str, root: str, url: str | None, files: list[str], go: Event, results: Any, worker: int
) -> None:
    latencies: list[float] = []
    reg: ModelRegistry | None = None
    if kind != "copy":
        reg = ModelRegistry(Path(root), url=url)
        reg.open()  # connect (and migrate) before the clock starts
    else:
        (Path(root) / f"w{worker}").mkdir(parents=True, exist_ok=True)
    go.wait()
    for i, f in enumerate(files):
        t = time.perf_counter()
        if reg is not None:
            reg.register(Path(f), "square8", 2, {}, {}, [], None, fencing_token=1, run_id=f"w{worker}-{i}")
        else:
            _durable_copy(Path(f), Path(root) / f"w{worker}" / f"{i}.pt")
        latencies.append(time.perf_counter() - t)
    if reg is not None:
        reg.close()
    results.put(latencies)


def _concurrent(kind: str, root: Path, url: str | None, batches: list[list[str]]) -> list[float]:
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(kind, str(root), url, files, go, results, w))
        for w, files in enumerate(batches)
    ]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let every worker import and connect; the clock starts at go
    t = time.perf_counter()
    go.set()
    lat: list[float] = []
    for _ in procs:
        lat += results.get(timeout=600)
    wall = time.perf_counter() - t
    for p in procs:
        p.join(timeout=60)
    return [wall, *lat]


def _summary(runs: list[list[float]]) -> dict[str, float]:
    lat = sorted(x for r in runs for x in r[1:])
    wall = sum(r[0] for r in runs)
    return {
        "p50_ms": round(1000 * statistics.median(lat), 2),
        "p95_ms": round(1000 * lat[int(0.95 * (len(lat) - 1))], 2),
        "per_second": round(len(lat) / wall, 1),
        "wall_seconds": round(wall, 3),
    }


def _p50(run: list[float]) -> float:
    return statistics.median(run[1:])


def _median_seconds(fn: Any, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _pull(root: Path, url: str, mib: int) -> dict[str, Any]:
    src = root / "big.pt"
    with src.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    with ModelRegistry(root / "pullreg", url=url) as reg:
        mid = reg.register(src, "hex8", 2, fencing_token=1)
        reg.promote(mid, fencing_token=1)
        obj = Path(reg.require_model(mid).path)
        obj.read_bytes()  # warm cache for both sides
        out, cp_out = root / "pulled.pt", root / "cp.pt"
        pull = _median_seconds(lambda: reg.pull("hex8_2p", out=out))
        cp = _median_seconds(lambda: subprocess.run(["cp", str(obj), str(cp_out)], check=True))
        cp_sync = _median_seconds(
            lambda: subprocess.run(["sh", "-c", f'cp "{obj}" "{cp_out}" && sync -f "{cp_out}"'], check=True)
        )
        verified = f'cp "{obj}" "{cp_out}" && sha256sum "{cp_out}"'
        cp_sha = _median_seconds(
            lambda: subprocess.run(["sh", "-c", verified], check=True, capture_output=True)
        )
    return {
        "mib": mib,
        "pull_ms": round(1000 * pull, 1),
        "cp_ms": round(1000 * cp, 1),
        "cp_sync_ms": round(1000 * cp_sync, 1),
        "cp_sha256sum_ms": round(1000 * cp_sha, 1),
        "ratio_vs_cp": round(pull / cp, 2),
        "ratio_vs_cp_sync": round(pull / cp_sync, 2),
        "ratio_vs_cp_sha256sum": round(pull / cp_sha, 2),
        "target": PULL_TARGET,
        "meets_target": pull / cp <= PULL_TARGET,
    }


def main() -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench.registry_register")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--per-worker", type=int, default=20)
    p.add_argument("--file-mib", type=float, default=1.0)
    p.add_argument("--pull-mib", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    server = PostgresServer(durable=True)
    server.start()
    try:
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            size = int(a.file_mib * (1 << 20))
            batches = []
            for w in range(a.workers):
                batch = []
                for i in range(a.per_worker):
                    f = root / "src" / f"w{w}-{i}.pt"
                    f.parent.mkdir(exist_ok=True)
                    f.write_bytes(os.urandom(size))
                    batch.append(str(f))
                batches.append(batch)
            runs: dict[str, list[list[float]]] = {"copy": [], "sqlite": [], "postgresql": []}
            for r in range(a.rounds):
                urls = {"copy": None, "sqlite": None, "postgresql": server.create_database(f"bench{r}")}
                for kind, url in urls.items():
                    runs[kind].append(_concurrent(kind, root / f"{kind}{r}", url, batches))
            pull = _pull(root, server.create_database("pull"), a.pull_mib)
    finally:
        server.stop()
    copy = _summary(runs["copy"])
    kinds = {}
    for kind in ("sqlite", "postgresql"):
        per_round = [_p50(mine) / _p50(base) for mine, base in zip(runs[kind], runs["copy"], strict=True)]
        summary = _summary(runs[kind])
        kinds[kind] = {
            **summary,
            "p50_ratio": round(statistics.median(per_round), 2),
            "p50_ratio_per_round": [round(x, 2) for x in per_round],
            "throughput_ratio": round(copy["per_second"] / summary["per_second"], 2),
        }
    return {
        "bench": "registry_register",
        "workers": a.workers,
        "registrations": a.workers * a.per_worker,
        "file_bytes": size,
        "rounds": a.rounds,
        "durable_copy": copy,
        **kinds,
        "register_target": REGISTER_TARGET,
        "register_meets_target": all(float(k["p50_ratio"]) <= REGISTER_TARGET for k in kinds.values()),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "pull": pull,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(main()))
