"""``ringrift-daemon health [--json]``: health status and active alerts."""

from __future__ import annotations

from datetime import UTC, datetime

from daemon.cli.output import print_json
from daemon.decide.health import TrainingHealthMonitor
from daemon.service.evaluator import alert_dict
from daemon.settings import Settings


def cli_health(settings: Settings, *, as_json: bool) -> int:
    path = settings.state_dir / "decide.db"
    monitor = TrainingHealthMonitor.from_settings(
        path, settings.health, configs=settings.configs, read_only=True
    )
    monitor.open()
    try:
        now = datetime.now(UTC)
        report = monitor.get_health_status(now=now)
        alerts = [alert_dict(a) for a in report.active_alerts]
    finally:
        monitor.close()
    if as_json:
        print_json({"status": report.status, "summary": report.summary, "active_alerts": alerts})
    else:
        print(f"{report.status}: {report.summary}")
        for a in alerts:
            print(f"  {a['severity'].upper():<8} {a['config'] or '-':<14} {a['kind']}: {a['message']}")
    return 0
