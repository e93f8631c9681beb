"""``ringrift-daemon status`` and ``health``: the service's view, computed here.

Works whether or not the service is running: it reads the same databases and
state stores (read-only for decisions: nothing is dispatched, no lock taken).
Exit 0 whenever the report was printed, even if sources are broken or health
is degraded (those are in the report).
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

from daemon.settings import Settings


async def build_report(settings: Settings, environ: dict[str, str] | None = None) -> dict[str, Any]:
    from daemon.components import build_components
    from daemon.decisions import Evaluator
    from daemon.locks import list_locks
    from daemon.pipeline import OptimizedTrainingPipeline

    comps = build_components(settings, dict(environ or {}))
    await comps.start()
    try:
        now = datetime.now(UTC)
        ev = Evaluator(comps, OptimizedTrainingPipeline(comps))
        poll = await asyncio.to_thread(comps.sources.poll)
        ev.apply_poll(poll, now)
        ev.show_health(now)
        running = {r.config for r in comps.journal.in_flight()}
        await ev.refresh_cluster()
        decisions = ev.decide(now, running=running)
        ev.publish(now, decisions, running=running)
        r = settings.redis
        locks_error = None
        try:
            locks = await asyncio.to_thread(
                list_locks,
                settings.lock_dir,
                redis_url=r.url if r else None,
                key_prefix=r.key_prefix if r else "ringrift:",
                password=r.resolved_password() if r else None,
            )
        except Exception as e:  # Redis down: the report must still show it (and the file locks)
            locks_error = f"{type(e).__name__}: {e}"
            locks = await asyncio.to_thread(list_locks, settings.lock_dir)
        by_config = {str(lk.get("name", "")).split(":", 1)[-1]: lk for lk in locks}
        for run in comps.journal.in_flight():
            cv = comps.view.configs.get(run.config)
            if cv is not None:
                cv.run = {
                    "run_id": run.run_id,
                    "state": run.state,
                    "node": run.node,
                    "started_at": run.started_at.isoformat(),
                    "fencing_token": run.fencing_token,
                }
        out = comps.view.as_status()
        out["locks_error"] = locks_error
        for key, cfg in out["configs"].items():
            cfg["lock"] = by_config.get(key)
        return out
    finally:
        await comps.close()


def _print_table(report: dict[str, Any]) -> None:
    print(f"health: {report['health']}  {report['health_summary']}")
    print(f"lock backend: {report['lock_backend']}  {report.get('lock_backend_reason', '')}")
    for path, s in report["sources"].items():
        state = "ok" if s["ok"] else f"ERROR {s['error']}"
        print(f"source {path}: {state} (schema v{s['schema_version']}, {s['orphans']} orphans)")
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
            extra.append(f"lock {c['lock']}")
        if c["run"]:
            extra.append(f"run {c['run'].get('run_id')} ({c['run'].get('state')})")
        if c["latest_model"]:
            extra.append(f"latest model {c['latest_model']}")
        for a in c["alerts"]:
            extra.append(f"{a['severity'].upper()} {a['kind']}: {a['message']}")
        for e in extra:
            print(f"{'':<14}{e}")


def cli_status(settings: Settings, *, as_json: bool, environ: dict[str, str] | None = None) -> int:
    try:
        report = asyncio.run(build_report(settings, environ))
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        if as_json:
            print(json.dumps({"error": str(e)}))
        return 1
    if as_json:
        print(json.dumps(report, default=str))
    else:
        _print_table(report)
    return 0


def cli_health(settings: Settings, *, as_json: bool) -> int:
    from daemon.decide.health import TrainingHealthMonitor

    monitor = TrainingHealthMonitor.from_settings(settings.state_dir / "decide.db", settings.health)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    monitor.open()
    try:
        now = datetime.now(UTC)
        report = monitor.get_health_status(now=now)
        from daemon.decisions import alert_dict

        alerts = [alert_dict(a) for a in report.active_alerts]
    finally:
        monitor.close()
    if as_json:
        print(json.dumps({"status": report.status, "summary": report.summary, "active_alerts": alerts}))
    else:
        print(f"{report.status}: {report.summary}")
        for a in alerts:
            print(f"  {a['severity'].upper():<8} {a['config'] or '-':<14} {a['kind']}: {a['message']}")
    return 0
