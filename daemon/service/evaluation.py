"""The evaluation work still needed: the pairs whose promotion test is open (for workers' queues)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from daemon.service.app import build_app
from daemon.service.promoter import Test
from daemon.settings import Settings


def pending(tests: dict[str, Test]) -> list[dict[str, Any]]:
    """Open tests that more games can decide, most expected games first."""
    out = []
    for key, test in tests.items():
        s, d = test.state, test.decision
        if d.result != "continue" or s.production is None:
            continue
        out.append(
            {
                "config": key,
                "candidate": s.candidate,
                "production": s.production,
                "games": d.games,
                "llr": d.llr,
                "lower": d.lower,
                "upper": d.upper,
                "expected_games": d.expected_games,
                "line": test.as_dict()["line"],
            }
        )
    return sorted(out, key=lambda p: -float(p["expected_games"]))


async def evaluation_report(settings: Settings, environ: dict[str, str], now: datetime) -> dict[str, Any]:
    """Read-only, like ``status``: poll the databases, bring the tests up to date in memory."""
    app = build_app(settings, environ, read_only=True)
    await app.start()
    try:
        await asyncio.to_thread(app.sources.poll)
        tests = await asyncio.to_thread(app.promoter.update, now)
        return {"pending": pending(tests), "mode": settings.promotion.mode}
    finally:
        await app.close()
