"""``/metrics``, ``/healthz``, ``/status``, ``/models/{config}`` and ``/evaluation``: one aiohttp
server inside the loop, bounded by :mod:`daemon.service.httplimits`.

Bound to 127.0.0.1 unless configured otherwise. Handlers read the in-memory view; the one
registry read (``/models``) runs in a thread, so no handler blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from daemon.registry.records import ModelRecord, RegistryError
from daemon.registry.registry import ModelRegistry
from daemon.service.httplimits import (
    ConnectionBudget,
    LimitedHandler,
    RateLimitedLog,
    accept_backlog,
    accept_error_handler,
    error_text,
)
from daemon.service.view import ServiceView
from daemon.settings import HttpLimits

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def model_summary(rec: ModelRecord | None) -> dict[str, Any] | None:
    """What a self-play or evaluation worker needs to fetch and check a model (``/models``)."""
    if rec is None:
        return None
    return {
        "id": rec.model_id,
        "version": rec.version,
        "stage": rec.stage,
        "status": rec.status,
        "sha256": rec.sha256,
        "size": rec.size,
        "path": rec.path,
        "parent": rec.parent_model_id,
        "created_at": rec.created_at.isoformat(),
        "run_id": rec.run_id,
    }


def models_report(models: ModelRegistry, config: str) -> dict[str, Any]:
    """The config's production model and newest ready candidate (blocking: a registry read)."""
    return {
        "config": config,
        "production": model_summary(models.get_production(config)),
        "candidate": model_summary(models.get_latest(config, stage="candidate")),
    }


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
        limits: HttpLimits | None = None,
        configs: Sequence[str] = (),
        models: ModelRegistry | None = None,
        evaluation: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.view = view
        self.max_tick_age = max_tick_age
        self.clock = clock
        self.limits = limits or HttpLimits()
        self.configs = tuple(configs)
        self.models = models
        self.evaluation = evaluation
        self.quiet = RateLimitedLog()
        self.budget: ConnectionBudget | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_handler: Any = None
        self.bound_port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._track])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status)
        app.router.add_get("/models/{config}", self._models)
        app.router.add_get("/evaluation", self._evaluation)
        return app

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        nofile = soft if soft != resource.RLIM_INFINITY else 1 << 20
        budget = ConnectionBudget(self.limits, nofile, self.quiet)
        self.budget = budget
        kwargs: dict[str, Any] = {"keepalive_timeout": self.limits.idle_timeout, "access_log": None}
        self._runner = web.AppRunner(self.app(), handle_signals=False, **kwargs)
        await self._runner.setup()
        manager = self._runner.server
        assert manager is not None

        def protocol() -> LimitedHandler:
            return LimitedHandler(manager, budget=budget, loop=loop, **kwargs)

        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(accept_error_handler(self.quiet, self._previous_handler))
        self._loop = loop
        self._server = await loop.create_server(
            protocol, self.host, self.port, reuse_address=True, backlog=accept_backlog(self.limits)
        )
        sockets: list[Any] = list(self._server.sockets)
        self.bound_port = int(sockets[0].getsockname()[1]) if sockets else self.port
        log.info(
            "http.started", host=self.host, port=self.bound_port, max_connections=budget.cap, nofile=nofile
        )

    @property
    def addresses(self) -> list[Any]:
        """The listening sockets' addresses (host, port[, ...])."""
        return [sock.getsockname() for sock in (self._server.sockets if self._server else ())]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()  # closes the live connections
            self._runner = None
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 10)
            self._server = None
        if self._loop is not None:
            self._loop.set_exception_handler(self._previous_handler)
            self._loop = None

    @web.middleware
    async def _track(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        conn = request.protocol
        if isinstance(conn, LimitedHandler):
            conn.request_started()
        try:
            return await handler(request)
        finally:
            if isinstance(conn, LimitedHandler):
                conn.request_finished()

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

    async def _models(self, request: web.Request) -> web.Response:
        config = request.match_info["config"]
        if config not in self.configs:
            shown = ", ".join(self.configs) or "none"
            return web.json_response(
                {"error": f"{config[:64]!r} is not enabled (enabled: {shown})"}, status=404
            )
        if self.models is None:
            return web.json_response({"error": "no registry in this service"}, status=503)
        try:
            body = await asyncio.to_thread(models_report, self.models, config)
        except RegistryError as e:  # e.g. PostgreSQL down: say so, keep serving
            return web.json_response({"error": f"registry unavailable: {error_text(e)}"}, status=503)
        return web.json_response(body)

    async def _evaluation(self, request: web.Request) -> web.Response:
        if self.evaluation is None:
            return web.json_response({"error": "no promotion tests in this service"}, status=503)
        return web.json_response(self.evaluation())
