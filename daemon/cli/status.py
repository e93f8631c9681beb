"""``ringrift-daemon status [--json]``: the service's view, computed from the state on disk.

Exit 0 whenever the report was printed, even if sources are broken or health is degraded
(those are in the report).
"""

from __future__ import annotations

import asyncio
from typing import Any

from daemon.cli.exits import EXIT_FAILURE
from daemon.cli.output import print_error, print_json
from daemon.service.report import build_report
from daemon.settings import Settings


def _print_table(report: dict[str, Any]) -> None:
    print(f"health: {report['health']}  {report['health_summary']}")
    print(f"lock backend: {report['lock_backend']}  {report.get('lock_backend_reason', '')}")
    for path, s in report["sources"].items():
        state = "ok" if s["ok"] else f"ERROR {s['error']}"
        print(f"source {path}: {state} (schema v{s['schema_version']}, {s['orphans']} orphans)")
        for w in s.get("warnings") or []:
            print(f"  warning: {w}")
    print(
        f"{'config':<14}{'usable':>8}{'new':>7}  {'fresh':>5} {'stale':>5} {'regr':>5} {'weight':>6} "
        f"{'prio':>6}  decision"
    )
    for key, c in report["configs"].items():
        sc = c["signal_scores"]
        verdict = "TRAIN" if c["should_train"] else "wait"
        print(
            f"{key:<14}{c['usable_games']:>8}{c['new_games']:>7}  {sc.get('data_freshness', 0):>5.2f} "
            f"{sc.get('model_staleness', 0):>5.2f} {sc.get('performance_regression', 0):>5.2f} "
            f"{c['curriculum_weight']:>6.2f} {c['priority']:>6.2f}  {verdict}: {c['reason']}"
        )
        extra = []
        if c["lock"]:
            extra.append(_lock_line(c["lock"]))
        if c["run"]:
            extra.append(f"run {c['run'].get('run_id')} ({c['run'].get('state')})")
        if c["latest_model"]:
            prod = c.get("production_model")
            extra.append(f"latest model {c['latest_model']}" + (f", production {prod}" if prod else ""))
        if c.get("promotion"):
            extra.append(f"promotion {c['promotion']['line']}")
        for a in c["alerts"]:
            extra.append(f"{a['severity'].upper()} {a['kind']}: {a['message']}")
        for e in extra:
            print(f"{'':<14}{e}")


def _lock_line(lock: dict[str, Any]) -> str:
    """``lock held by host:pid (redis, token 17, 41.2s left)``."""
    bits = [str(lock.get("backend", "?"))]
    if lock.get("token") is not None:
        bits.append(f"token {lock['token']}")
    if lock.get("ttl_left") is not None:
        bits.append(f"{float(lock['ttl_left']):.1f}s left")
    return f"lock held by {lock.get('holder') or '?'} ({', '.join(bits)})"


def cli_status(settings: Settings, *, as_json: bool, environ: dict[str, str] | None = None) -> int:
    try:
        report = asyncio.run(build_report(settings, environ))
    except Exception as e:
        print_error(str(e), as_json)
        return EXIT_FAILURE
    if as_json:
        print_json(report)
    else:
        _print_table(report)
    return 0
