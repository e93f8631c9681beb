"""``python -m bench NAME [ARGS...]`` runs one bench; ``--all`` runs every bench in BENCHES.

Each bench prints (or returns) one JSON object. ``--all`` runs each bench in a fresh
subprocess (``python -m bench NAME``) with a per-bench timeout, so one bench's
imports, threads or crash cannot skew or stop the others; a failed bench is
recorded as ``{"bench": NAME, "error": ...}`` and the run continues. It writes the
list to ``bench/results.json`` and prints a markdown table (figure, same-run
baseline, ratio, target, pass/miss) for the README.

Logging in the child goes to stderr, so stdout carries only the JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.summaries_data import SUMMARIES as DATA_SUMMARIES

BENCHES: tuple[str, ...] = (
    "gamedb_refresh",
    "gamedb_refresh_1m",
    "decide_eval",
    "promotion_update",
    "locks_latency",
    "registry_register",
    "trainer_throughput",
    "export_throughput",
    "export_cache_hit",
    "export_incremental",
    "export_rss",
    "service_idle",
    "service_scrape",
    "service_latency",
)
# Smaller sizes for ``--all --quick`` (same figures, fewer repetitions).
QUICK_ARGS: dict[str, list[str]] = {
    "locks_latency": ["--n", "400", "--clients", "4", "--failovers", "2"],
    "trainer_throughput": ["--games", "60", "--batch-sizes", "128", "--repeats", "2"],
    "export_throughput": ["--games", "600", "--hex-games", "600", "--rss-sizes", "300,1200"],
    "gamedb_refresh_1m": ["--rounds", "10"],
    "export_incremental": ["--rounds", "2"],
    "export_rss": ["--games", "10000"],
}
DEFAULT_TIMEOUT = 900.0
RESULTS = Path(__file__).resolve().parent / "results.json"
ROOT = Path(__file__).resolve().parents[1]

EXIT_OK = 0
EXIT_BENCH_FAILED = 1
EXIT_BAD_ARGS = 2


def _configure_child_logging() -> None:
    """structlog and stdlib logging to stderr: a bench's stdout is its JSON object only."""
    import logging

    import structlog

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))


def run_inline(name: str, args: Sequence[str] = ()) -> dict[str, Any] | None:
    """Import ``bench.NAME`` and call its ``main()`` with ``args`` as the command line.

    Returns the dict when ``main()`` returns one; benches that print their own JSON
    return ``None`` here (their object is already on stdout).
    """
    import importlib

    if not name.replace("_", "").isalnum():
        raise SystemExit(f"bad bench name {name!r}")
    _configure_child_logging()
    module = importlib.import_module(f"bench.{name}")
    sys.argv = [f"bench/{name}.py", *args]
    result = module.main()
    return result if isinstance(result, dict) else None


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last stdout line that is a JSON object (benches print exactly one)."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def run_child(name: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run one bench in a fresh interpreter; never raises for a bench failure."""
    cmd = [sys.executable, "-m", "bench", name, *args]
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Own session: on a timeout the whole group (services, redis-servers it started) goes.
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, stderr = proc.communicate()
        return {"bench": name, "error": f"timed out after {timeout:.0f} s", "stderr_tail": _tail(stderr)}
    took = round(time.monotonic() - t0, 1)
    result = last_json_object(stdout)
    if proc.returncode != 0 or result is None:
        why = f"exit {proc.returncode}" if proc.returncode != 0 else "no JSON object on stdout"
        return {"bench": name, "error": why, "wall_seconds": took, "stderr_tail": _tail(stderr)}
    result.setdefault("bench", name)
    result["wall_seconds"] = took
    if args:
        result["bench_args"] = list(args)
    return result


def _tail(text: str | bytes | None, lines: int = 15) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


# -- summary table -----------------------------------------------------------------------------
# A row: (figure label, value, baseline, ratio, target text, passed or None when no target).
Row = tuple[str, Any, Any, Any, str, bool | None]


def _g(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def _ratio(a: Any, b: Any) -> float | None:
    try:
        return round(float(a) / float(b), 2) if b else None
    except (TypeError, ValueError):
        return None


def _rows_gamedb(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "no-change refresh, 12 configs (µs) vs naive COUNT(*)",
            r.get("no_change_refresh_us"),
            _fmt_unit(r.get("naive_count_12_configs_ms"), "ms"),
            r.get("ratio_naive_over_no_change"),
            "naive/ours >= 100",
            _ge(r.get("ratio_naive_over_no_change"), 100),
        ),
        (
            "refresh after 100 new games (ms) vs naive COUNT(*)",
            r.get("incremental_100_ms"),
            r.get("naive_count_12_configs_ms"),
            r.get("ratio_naive_over_incremental_100"),
            "< 10 ms",
            _lt(r.get("incremental_100_ms"), 10),
        ),
    ]


def _rows_decide(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "decision evaluation, 12 configs (ms) vs naive recompute",
            r.get("full_evaluation_ms"),
            r.get("baseline_naive_recompute_ms"),
            r.get("speedup_vs_baseline"),
            "< 5 ms",
            r.get("meets_target"),
        )
    ]


def _rows_promotion(r: dict[str, Any]) -> list[Row]:
    return [
        (
            f"promotion tick, 12 configs x {r.get('new_results_per_config')} new results (ms) vs recompute",
            r.get("tick_ms"),
            r.get("baseline_recompute_ms"),
            r.get("ratio_recompute_over_tick"),
            f"< {r.get('target_ms', 5.0)} ms",
            r.get("meets_target"),
        )
    ]


def _rows_locks(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for label in ("single", "concurrent"):
        s = r.get(label) or {}
        rows.append(
            (
                f"lock acquire+release p50 µs ({label}) vs bare SET NX+DEL",
                s.get("lock_p50_us"),
                s.get("bare_p50_us"),
                s.get("ratio_p50"),
                "<= 2x bare",
                _le(s.get("ratio_p50"), 2),
            )
        )
        rows.append(
            (
                f"lock acquire+release p99 µs ({label}) vs bare SET NX+DEL",
                s.get("lock_p99_us"),
                s.get("bare_p99_us"),
                s.get("ratio_p99"),
                "",
                None,
            )
        )
    fo = r.get("failover_ttl_multiple") or {}
    rows.append(
        (
            "failover after kill -9 (x TTL, max)",
            fo.get("max"),
            "1 TTL",
            fo.get("max"),
            "<= 1.1x TTL",
            _le(fo.get("max"), 1.1),
        )
    )
    return rows


def _rows_registry(r: dict[str, Any]) -> list[Row]:
    copy, pull = r.get("durable_copy") or {}, r.get("pull") or {}
    target = r.get("register_target", 3.0)
    rows: list[Row] = [
        (
            f"register p50 ms, {r.get('workers')} concurrent, {kind} vs durable copy",
            (r.get(kind) or {}).get("p50_ms"),
            copy.get("p50_ms"),
            (r.get(kind) or {}).get("p50_ratio"),
            f"<= {target}x copy",
            _le((r.get(kind) or {}).get("p50_ratio"), target),
        )
        for kind in ("sqlite", "postgresql")
    ]
    rows.append(
        (
            f"pull {pull.get('mib')} MiB (verified, durable) ms vs cp",
            pull.get("pull_ms"),
            pull.get("cp_ms"),
            pull.get("ratio_vs_cp"),
            f"<= {pull.get('target', 1.5)}x cp",
            _le(pull.get("ratio_vs_cp"), pull.get("target", 1.5)),
        )
    )
    return rows


def _rows_trainer(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "trainer samples/s vs bare torch loop",
            r.get("trainer_samples_per_second"),
            r.get("bare_samples_per_second"),
            r.get("ratio"),
            f">= {r.get('target_ratio', 0.85)} x bare",
            _ge(r.get("ratio"), r.get("target_ratio", 0.85)),
        )
    ]


def _rows_export(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    t = r.get("targets") or {}
    for key in ("square8_2p", "hexagonal_2p"):
        s = r.get(key) or {}
        one_core = key == "square8_2p"
        rows.append(
            (
                f"export {key}, one process: games/s (export time vs raw scan)",
                s.get("games_per_second"),
                "raw SQL scan",
                s.get("ratio_export_to_raw_scan"),
                ">= 1000 games/s on one core" if one_core else "-",
                t.get("square8_ge_1000_games_per_s") if one_core else "-",
            )
        )
        if s.get("workers"):
            rows.append(
                (
                    f"export {key}, {s['workers']} workers (default): games/s (vs raw scan)",
                    s.get("games_per_second_workers"),
                    "raw SQL scan",
                    s.get("ratio_export_workers_to_raw_scan"),
                    "<= 4x raw scan",
                    _le(s.get("ratio_export_workers_to_raw_scan"), 4),
                )
            )
    sizes = _g(r, "rss", "sizes") or []
    if sizes:
        rows.append(
            (
                "export peak RSS MB (largest size) vs smallest size",
                sizes[-1].get("peak_rss_mb"),
                sizes[0].get("peak_rss_mb"),
                _ratio(sizes[-1].get("peak_rss_mb"), sizes[0].get("peak_rss_mb")),
                "< 1024 MB",
                t.get("peak_rss_lt_1gb"),
            )
        )
    sq = r.get("square8_2p") or {}
    rows.append(
        (
            "export cache hit, warm (ms)",
            sq.get("cache_hit_warm_ms"),
            None,
            None,
            "< 20 ms",
            t.get("cache_hit_warm_lt_20ms"),
        )
    )
    return rows


def _rows_service_idle(r: dict[str, Any]) -> list[Row]:
    return [
        (
            "idle service RSS MB vs bare python+deps",
            r.get("rss_mb"),
            r.get("baseline_rss_mb"),
            r.get("rss_ratio"),
            f"< {r.get('rss_target_mb', 150)} MB",
            r.get("rss_ok"),
        ),
        (
            "idle service CPU % vs baseline process",
            r.get("cpu_percent"),
            r.get("baseline_cpu_percent"),
            _ratio(r.get("cpu_percent"), r.get("baseline_cpu_percent")),
            "",
            None,
        ),
        (
            "tick p95 (ms), 12 configs",
            r.get("tick_p95_ms", _g(r, "tick", "tick_p95_ms")),
            r.get("poll_median_ms", _g(r, "tick", "poll_median_ms")),
            r.get("tick_vs_poll_ratio", _g(r, "tick", "tick_vs_poll_ratio")),
            f"< {r.get('tick_target_ms', 50)} ms",
            r.get("tick_ok"),
        ),
    ]


def _rows_service_scrape(r: dict[str, Any]) -> list[Row]:
    svc, base = r.get("service") or {}, r.get("baseline_fixed_body") or {}
    return [
        (
            f"/metrics scrape p99 ms at {r.get('rate_per_s')}/s vs fixed-body aiohttp",
            svc.get("p99_ms"),
            base.get("p99_ms"),
            r.get("p99_ratio"),
            f"< {r.get('p99_target_ms', 20)} ms",
            r.get("p99_ok"),
        )
    ]


def _rows_service_latency(r: dict[str, Any]) -> list[Row]:
    med = r.get("median_s") or {}
    return [
        (
            "new data -> trainer started, trainer init (s) vs `import torch`",
            med.get("trainer_init"),
            r.get("baseline_import_torch_s"),
            r.get("trainer_init_vs_import_torch"),
            "",
            None,
        ),
        ("service overhead per run (s)", r.get("service_overhead_s"), None, None, "", None),
    ]


def _rows_generic(r: dict[str, Any]) -> list[Row]:
    """Benches without a dedicated summary: every top-level ratio-like figure."""
    rows: list[Row] = []
    for k, v in r.items():
        if isinstance(v, int | float) and not isinstance(v, bool) and ("ratio" in k or "speedup" in k):
            rows.append((k, v, None, v, "", None))
    ok = [v for k, v in r.items() if isinstance(v, bool) and (k.endswith("_ok") or k.startswith("meets"))]
    if not rows:
        rows.append(("(see bench/results.json)", None, None, None, "", all(ok) if ok else None))
    return rows


SUMMARIES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "gamedb_refresh": _rows_gamedb,
    "decide_eval": _rows_decide,
    "promotion_update": _rows_promotion,
    "locks_latency": _rows_locks,
    "registry_register": _rows_registry,
    "trainer_throughput": _rows_trainer,
    "export_throughput": _rows_export,
    "service_idle": _rows_service_idle,
    "service_scrape": _rows_service_scrape,
    "service_latency": _rows_service_latency,
    **DATA_SUMMARIES,
}


def _ge(v: Any, t: Any) -> bool | None:
    return None if v is None or t is None else float(v) >= float(t)


def _le(v: Any, t: Any) -> bool | None:
    return None if v is None or t is None else float(v) <= float(t)


def _lt(v: Any, t: Any) -> bool | None:
    return None if v is None else float(v) < float(t)


def _fmt_unit(v: Any, unit: str) -> str | None:
    return None if v is None else f"{v} {unit}"


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    out = [
        "| bench | figure | value | same-run baseline | ratio | target | result |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        name = str(r.get("bench") or r.get("benchmark") or "?")
        if "error" in r:
            out.append(f"| {name} | - | - | - | - | - | ERROR: {str(r['error'])[:80]} |")
            continue
        try:
            rows = SUMMARIES.get(name, _rows_generic)(r)
        except Exception as e:  # a changed bench output must not lose the table
            rows = [(f"(summary failed: {type(e).__name__})", None, None, None, "", None)]
        for label, value, base, ratio, target, ok in rows:
            verdict = "-" if ok is None else ("pass" if ok else "miss")
            cells = [name, label, _cell(value), _cell(base), _cell(ratio), target or "-", verdict]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def run_all(names: Sequence[str], *, quick: bool, timeout: float, results_path: Path) -> int:
    results: list[dict[str, Any]] = []
    for name in names:
        print(f"bench: running {name} ...", file=sys.stderr, flush=True)
        result = run_child(name, QUICK_ARGS.get(name, []) if quick else [], timeout)
        if "error" in result:
            print(
                f"bench: {name} FAILED: {result['error']}\n{result.get('stderr_tail', '')}", file=sys.stderr
            )
        print(json.dumps(result), flush=True)
        results.append(result)
    tmp = results_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(results_path)
    print(markdown_table(results), file=sys.stderr, flush=True)
    return EXIT_BENCH_FAILED if any("error" in r for r in results) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument("name", nargs="?", help="bench module under bench/ (e.g. gamedb_refresh)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the bench")
    p.add_argument("--all", action="store_true", help=f"run every bench in BENCHES and write {RESULTS.name}")
    p.add_argument("--only", default=None, help="with --all: comma-separated subset of BENCHES")
    p.add_argument("--quick", action="store_true", help="with --all: smaller sizes (QUICK_ARGS)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="per-bench timeout (s)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where --all writes the JSON list")
    p.add_argument("--table", type=Path, default=None, help="print the markdown table of a results file")
    a = p.parse_args(argv)
    if a.table is not None:
        print(markdown_table(json.loads(a.table.read_text())))
        return EXIT_OK
    if a.all == bool(a.name):
        p.error("give one bench NAME or --all")
    if a.name:
        result = run_inline(a.name, a.args)
        if result is not None:
            print(json.dumps(result), flush=True)
        return EXIT_OK
    names = BENCHES if a.only is None else tuple(n for n in a.only.split(",") if n)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        p.error(f"unknown bench(es): {', '.join(unknown)}")
    return run_all(names, quick=a.quick, timeout=a.timeout, results_path=a.results)


if __name__ == "__main__":
    sys.exit(main())
