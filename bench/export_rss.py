"""Peak memory of an export, every process counted (the exporter, its forkserver and workers).

``python -m bench export_rss [--games 100000] [--small 1000] [--workers 2]`` prints one JSON
object. Each export runs in a child process (``run_export(force=True)`` with ``export.workers``)
on a cached database of about ``--games`` usable ``square8_2p`` games with moves
(:func:`bench.dbcache.moves_db`); this process samples the child's whole process tree from
``/proc`` every 20 ms:

* ``peak_sum_rss_mb``: the largest sum of ``VmRSS`` over the tree at one sample;
* ``sum_of_peaks_mb``: each process's own peak (``VmHWM``) summed, as if all had peaked at
  once: an upper bound, and the figure the target applies to;
* ``largest_child_mb``: ``ru_maxrss`` of ``RUSAGE_CHILDREN`` (the largest single process).

Same-run baselines: a bare interpreter importing the exporter, and the same export of
``--small`` games. Target: sum_of_peaks < 1024 MB at 100,000 games.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.dbcache import moves_db

KEY = "square8_2p"
EXPORT = (
    "import json, sys; from daemon.settings import settings_from_mapping; "
    "from daemon.export.job import run_export; s = settings_from_mapping(json.loads(sys.argv[1])); "
    "r = run_export(s, sys.argv[2], force=True); print(json.dumps([r.games, r.samples, r.bytes]))"
)
BARE = "import daemon.export.job, daemon.export.workers; print('[0, 0, 0]')"


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        out.setdefault(ppid, []).append(int(name))
    return out


def _tree(root: int) -> list[int]:
    kids = _children()
    todo, seen = [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(kids.get(pid, []))
    return seen


def _kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in kB of ``pid``, None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    except OSError:
        return None
    if "VmRSS" not in fields:
        return None  # a zombie
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def measure(code: str, args: list[str]) -> dict[str, Any]:
    """Run ``python -c code args`` and sample its process tree until it exits."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    peak_sum, hwm, pids = 0, dict[int, int](), set()
    while proc.poll() is None:
        total = 0
        for pid in _tree(proc.pid):
            kb = _kb(pid)
            if kb is None:
                continue
            pids.add(pid)
            total += kb[0]
            hwm[pid] = max(hwm.get(pid, 0), kb[1])
        peak_sum = max(peak_sum, total)
        time.sleep(0.02)
    out, _ = proc.communicate()
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"export child failed: exit {proc.returncode}")
    games, samples, size = json.loads(out.strip().splitlines()[-1])
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "games": games,
        "samples": samples,
        "bytes": size,
        "seconds": round(seconds, 2),
        "processes": len(pids),
        "peak_sum_rss_mb": round(peak_sum / 1024, 1),
        "sum_of_peaks_mb": round(sum(hwm.values()) / 1024, 1),
        "largest_child_mb": round(max(after, before) / 1024, 1) if after > before else None,
    }


def export_run(tmp: Path, db: Path, workers: int) -> dict[str, Any]:
    cfg = {
        "data_dir": str(tmp / db.stem),
        "game_dbs": [str(db)],
        "configs": [KEY],
        "export": {"min_free_bytes": 0, "workers": workers},
    }
    res = measure(EXPORT, [json.dumps(cfg), KEY])
    res["db_bytes"] = db.stat().st_size
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--games", type=int, default=100_000)
    p.add_argument("--small", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    t = time.perf_counter()
    big, small = moves_db(a.games), moves_db(a.small)
    build_s = time.perf_counter() - t
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_export_rss_") as d:
        bare = measure(BARE, [])
        small_run = export_run(Path(d), small, a.workers)
        big_run = export_run(Path(d), big, a.workers)
    result = {
        "bench": "export_rss",
        "workers": a.workers,
        "build_or_cache_seconds": round(build_s, 1),
        "bare_import": bare,
        "small": small_run,
        "large": big_run,
        "ratio_large_to_small": round(big_run["sum_of_peaks_mb"] / small_run["sum_of_peaks_mb"], 2),
        "ratio_large_to_bare": round(big_run["sum_of_peaks_mb"] / bare["sum_of_peaks_mb"], 2),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "targets": {"large.sum_of_peaks_mb": "< 1024"},
        "targets_met": big_run["sum_of_peaks_mb"] < 1024,
    }
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
