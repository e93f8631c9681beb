"""``/metrics`` scrape latency of the real service at 50 requests/s, vs a trivial server.

The service process runs with 12 configs and 4 game DBs (poll and decide every 0.5 s,
no training). The baseline is a bare aiohttp process that returns the service's own
``/metrics`` body (same bytes, same content type) from memory, measured in the same run,
interleaved in rounds (baseline, service, baseline, service) so machine noise hits both.

The client sends on a fixed schedule (open loop: one request every 20 ms, handed to a
pool of threads, each with its own keep-alive ``http.client`` connection) and records
send-to-last-byte latency. Target: service p99 < 20 ms.

Run: ``python -m bench.service_scrape`` (prints one JSON object).
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.service_idle import build_dbs, free_port, get, start_service, stop, wait_healthy, write_settings

RATE = 50.0
ROUND_SECONDS = 5.0
ROUNDS = 2  # per target: 10 s of scraping each
WORKERS = 8

FIXED_SERVER = """
import sys
from aiohttp import web
body = open(sys.argv[2], "rb").read()
ctype = sys.argv[3]
async def metrics(request):
    return web.Response(body=body, headers={"Content-Type": ctype})
app = web.Application()
app.router.add_get("/metrics", metrics)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def scrape_round(port: int, seconds: float, rate: float = RATE) -> tuple[list[float], int]:
    """Latencies (s) of requests sent every 1/rate s for ``seconds``; and the error count."""
    local = threading.local()
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()

    def one() -> None:
        nonlocal errors
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        t = time.perf_counter()
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read()
            ok = resp.status == 200 and len(body) > 0
        except (OSError, http.client.HTTPException):
            conn.close()
            local.conn = None
            ok = False
        dt = time.perf_counter() - t
        with lock:
            if ok:
                lat.append(dt)
            else:
                errors += 1

    n = int(seconds * rate)
    start = time.perf_counter() + 0.05
    with ThreadPoolExecutor(WORKERS) as pool:
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one)
    return lat, errors


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(lat: list[float]) -> dict[str, float]:
    return {
        "n": len(lat),
        "p50_ms": round(statistics.median(lat) * 1000, 3),
        "p99_ms": round(pct(lat, 0.99) * 1000, 3),
        "max_ms": round(max(lat) * 1000, 3),
    }


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rr-bench-scrape-") as d:
        root = Path(d)
        build_dbs(root)
        port = free_port()
        svc = start_service(write_settings(root, "service", port=port), root / "service.log")
        fixed = None
        try:
            wait_healthy(port, svc)
            time.sleep(1.5)  # a few ticks: every per-config family is populated
            status, body = get(port, "/metrics")
            assert status == 200
            (root / "body.txt").write_bytes(body)
            fixed_port = free_port()
            fixed = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    FIXED_SERVER,
                    str(fixed_port),
                    str(root / "body.txt"),
                    "text/plain; version=0.0.4; charset=utf-8",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 30
            while True:
                try:
                    if get(fixed_port, "/metrics", 2)[0] == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.1)
            service_lat: list[float] = []
            base_lat: list[float] = []
            errors = {"service": 0, "baseline": 0}
            for _ in range(ROUNDS):
                lat, err = scrape_round(fixed_port, ROUND_SECONDS)
                base_lat += lat
                errors["baseline"] += err
                lat, err = scrape_round(port, ROUND_SECONDS)
                service_lat += lat
                errors["service"] += err
        finally:
            rc = stop(svc)
            if fixed is not None:
                fixed.kill()
                fixed.wait(timeout=10)
    s, b = summary(service_lat), summary(base_lat)
    return {
        "bench": "service_scrape",
        "rate_per_s": RATE,
        "seconds_per_target": ROUND_SECONDS * ROUNDS,
        "body_bytes": len(body),
        "service": s,
        "baseline_fixed_body": b,
        "errors": errors,
        "p50_ratio": round(s["p50_ms"] / b["p50_ms"], 2),
        "p99_ratio": round(s["p99_ms"] / b["p99_ms"], 2),
        "p99_target_ms": 20,
        "p99_ok": s["p99_ms"] < 20,
        "service_exit": rc,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
