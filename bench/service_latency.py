"""Trigger-to-trainer-start latency of the real service, with its breakdown.

One service process (poll and decide every 0.5 s, file locks, 1-epoch tiny trainer) watches
a game DB holding too few games for three configs. For each config in turn the bench writes
the games that cross ``bootstrap_min_games`` and times, from the moment the write committed:

* ``detect``: until ``run.started`` (poll sees the games, decide flips, lock taken);
* ``dispatch``: ``run.started`` -> ``export.started`` (journal, parent lookup);
* ``export``: ``export.started`` -> ``export.finished``;
* ``spawn``: ``export.finished`` -> ``trainer.started`` (subprocess created);
* ``trainer_init``: ``trainer.started`` -> the trainer's first ``{"event": "start"}``
  (interpreter start, torch import, data mapped, model built).

Timestamps are the service's own JSON log lines (``--log-level DEBUG`` for
``trainer.progress``). Baseline, same run: wall time of ``python -c "import torch"``,
which dominates ``trainer_init``.

Run: ``python -m bench.service_latency`` (prints one JSON object).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.service_idle import free_port, start_service, stop, wait_healthy, write_settings
from daemon.selfplay_sim import write_games

CONFIGS = ("square8_2p", "hex8_2p", "square8_3p")
MIN_GAMES = 40
STEPS = ("detect", "dispatch", "export", "spawn", "trainer_init")


class LogTail:
    """JSON events appended to the service's log since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.events: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        new = []
        for line in data[:end].splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and "event" in ev and "timestamp" in ev:
                ev["t"] = datetime.fromisoformat(ev["timestamp"]).timestamp()
                new.append(ev)
        self.events += new
        return new


def wait_event(tail: LogTail, match: Any, timeout: float, proc: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in tail.events:
            if match(ev):
                return ev
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        time.sleep(0.05)
        tail.read()
    raise TimeoutError("event not seen")


def trial(key: str, db: Path, seed: int, tail: LogTail, proc: Any) -> dict[str, float]:
    write_games(db, key, MIN_GAMES + 20, seed=seed)
    written = time.time()
    run = wait_event(tail, lambda e: e["event"] == "run.started" and e.get("config") == key, 60, proc)
    rid = run["run_id"]
    exp0 = wait_event(
        tail,
        lambda e: e["event"] in ("export.started", "export.cache_hit") and e.get("config") == key,
        60,
        proc,
    )
    exp1 = wait_event(
        tail,
        lambda e: e["event"] in ("export.finished", "export.cache_hit") and e.get("config") == key,
        60,
        proc,
    )
    spawned = wait_event(tail, lambda e: e["event"] == "trainer.started" and e.get("run_id") == rid, 60, proc)
    first = wait_event(
        tail,
        lambda e: (
            e["event"] == "trainer.progress"
            and e.get("run_id") == rid
            and (e.get("progress") or {}).get("event") == "start"
        ),
        120,
        proc,
    )
    wait_event(
        tail, lambda e: e["event"].startswith("run.") and e.get("run_id") == rid and e is not run, 120, proc
    )
    points = [written, run["t"], exp0["t"], exp1["t"], spawned["t"], first["t"]]
    out = {step: round(b - a, 3) for step, a, b in zip(STEPS, points, points[1:], strict=False)}
    out["total"] = round(first["t"] - written, 3)
    return out


def import_torch_seconds(repeats: int = 3) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True, timeout=120)
        out.append(time.perf_counter() - t)
    return out


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rr-bench-latency-") as d:
        root = Path(d)
        db = root / "games" / "selfplay.db"
        for i, key in enumerate(CONFIGS):
            write_games(db, key, 5, seed=100 + i)  # below the threshold
        port = free_port()
        cfg = write_settings(
            root,
            "service",
            port=port,
            configs=CONFIGS,
            triggers={"bootstrap_min_games": MIN_GAMES, "freshness_threshold": 100000, "min_interval": 3600},
            training={"epochs": 1, "batch_size": 32, "channels": 4, "blocks": 1, "device": "cpu", "grace": 3},
        )
        log = root / "service.log"
        log.touch()
        proc = start_service(cfg, log, log_level="DEBUG")
        tail = LogTail(log)
        trials: list[dict[str, Any]] = []
        try:
            wait_healthy(port, proc)
            time.sleep(1.0)  # let the first ticks settle
            for i, key in enumerate(CONFIGS):
                tail.read()
                trials.append({"config": key, **trial(key, db, 1000 + i, tail, proc)})
        finally:
            rc = stop(proc)
        torch_s = import_torch_seconds()
    med = {step: round(statistics.median(float(t[step]) for t in trials), 3) for step in (*STEPS, "total")}
    torch_med = statistics.median(torch_s)
    return {
        "bench": "service_latency",
        "interval_s": 0.5,
        "trials": trials,
        "median_s": med,
        "baseline_import_torch_s": round(torch_med, 3),
        "trainer_init_vs_import_torch": round(med["trainer_init"] / torch_med, 2),
        "service_overhead_s": round(med["total"] - med["trainer_init"], 3),
        "service_exit": rc,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
