"""The status report: the service's view, computed from the state on disk.

Works whether or not the service is running: it reads the same databases and
state stores through read-only copies (nothing is dispatched, no lock taken,
no file or directory is created or written).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from daemon.locks import list_locks
from daemon.redis_keys import DEFAULT_PREFIX
from daemon.registry.records import RegistryError
from daemon.service.app import build_app
from daemon.settings import Settings


async def build_report(settings: Settings, environ: dict[str, str] | None = None) -> dict[str, Any]:
    app = build_app(settings, dict(environ or {}), read_only=True)
    await app.start()
    try:
        now = datetime.now(UTC)
        ev = app.evaluator
        poll = await asyncio.to_thread(app.sources.poll)
        ev.apply_poll(poll, now)
        try:
            await asyncio.to_thread(app.promoter.update, now)  # the tests as they stand; nothing acted on
        except RegistryError:  # the registry is down: the report says so (decide raises the alert)
            pass
        app.promoter.publish(app.view)
        ev.show_health(now)
        running = {r.config for r in app.journal.in_flight()}
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
                key_prefix=r.key_prefix if r else DEFAULT_PREFIX,
                password=r.resolved_password() if r else None,
            )
        except Exception as e:  # Redis down: the report must still show it (and the file locks)
            locks_error = f"{type(e).__name__}: {e}"
            locks = await asyncio.to_thread(list_locks, settings.lock_dir)
        by_config = {str(lk.get("name", "")).split(":", 1)[-1]: lk for lk in locks}
        for run in app.journal.in_flight():
            cv = app.view.configs.get(run.config)
            if cv is not None:
                cv.run = {
                    "run_id": run.run_id,
                    "state": run.state,
                    "node": run.node,
                    "started_at": run.started_at.isoformat(),
                    "fencing_token": run.fencing_token,
                }
        out = app.view.as_status()
        out["locks_error"] = locks_error
        for key, cfg in out["configs"].items():
            cfg["lock"] = by_config.get(key)
        return out
    finally:
        await app.close()
