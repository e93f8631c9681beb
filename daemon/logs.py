"""structlog configuration: called once, from ``cli.main``.

JSON lines when the output is not a terminal (journald), readable console
output on a terminal; stdlib loggers (APScheduler, redis, asyncio) are routed
through the same processors so every line has one shape.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(level: str = "INFO", *, json: bool | None = None, stream: TextIO | None = None) -> None:
    """Configure structlog and the stdlib root logger (idempotent)."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
        pre = [structlog.processors.dict_tracebacks]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        pre = []
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *pre, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler logs every job added and run at INFO; keep its warnings and errors.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    structlog.configure(
        # filter_by_level first: a disabled DEBUG call costs a level check, not a render.
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
