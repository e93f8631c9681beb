"""``ringrift-daemon evaluation pending [--json]``: the model pairs that still need evaluation games."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from daemon.cli.exits import EXIT_FAILURE, EXIT_OK
from daemon.cli.output import print_error, print_json
from daemon.service.evaluation import evaluation_report
from daemon.settings import Settings


def cli_evaluation(settings: Settings, *, as_json: bool, environ: dict[str, str]) -> int:
    try:
        report = asyncio.run(evaluation_report(settings, environ, datetime.now(UTC)))
    except Exception as e:
        print_error(str(e), as_json)
        return EXIT_FAILURE
    if as_json:
        print_json(report)
        return EXIT_OK
    if not report["pending"]:
        print(f"no promotion test needs games (promotion.mode: {report['mode']})")
    for p in report["pending"]:
        print(f"{p['config']:<14} {p['line']}; about {round(p['expected_games'])} more games expected")
    return EXIT_OK
