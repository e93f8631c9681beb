"""``/metrics``, ``/healthz`` and ``/status``: one aiohttp server inside the loop.

Bound to 127.0.0.1 unless configured otherwise. Handlers only read the
in-memory view and the registry, so they never block on I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from daemon.service.view import ServiceView

log = structlog.get_logger(__name__)


class HttpServer:
    """Constructor stores; :meth:`start` binds; :meth:`close` unbinds."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        view: Callable[[], ServiceView],
        *,
        max_tick_age: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.view = view
        self.max_tick_age = max_tick_age
        self.clock = clock
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        log.info("http.started", host=self.host, port=self.bound_port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        v = self.view()
        age = None if v.last_tick_ts is None else self.clock() - v.last_tick_ts
        ok = age is not None and age <= self.max_tick_age
        return web.json_response(
            {"ok": ok, "last_tick_age_seconds": age, "health": v.health}, status=200 if ok else 503
        )

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.view().as_status())
