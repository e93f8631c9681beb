"""Bounded HTTP: a connection cap, a descriptor reserve, header and idle timeouts, quiet errors.

A burst of connections must neither starve the runs of file descriptors (an NPZ that cannot be
opened fails a run) nor fill the log, and ``/metrics`` must keep answering. So:

- **Cap**: at most ``max_connections`` connections; at the cap a new one evicts the connection
  idle the longest (no request in progress; a scrape sends its request at once, so it is the
  newest and the last to go), else it is closed at once.
- **Descriptor reserve**: a connection whose descriptor number is within ``fd_reserve`` of
  ``RLIMIT_NOFILE`` is treated as one over the cap. The kernel hands out the lowest free number,
  so a high one means the table below it is full. asyncio accepts up to the listen backlog in
  one batch before any protocol sees a connection, so the backlog is kept well below the
  reserve (:func:`accept_backlog`). The soft limit is raised to the hard one at start.
- **Timeouts**: a connection with no request in progress is closed after ``idle_timeout``
  (aiohttp's keep-alive timer, which also runs before the first request); a request whose
  headers are not complete ``header_timeout`` after its first byte is aborted (slow clients).
- **Quiet errors**: malformed requests and ``accept()`` failures are logged as one line without
  a traceback, at most :data:`BURST` per event per :data:`WINDOW` seconds, with the count of
  those left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from daemon.settings import HttpLimits

log = structlog.get_logger(__name__)

WINDOW = 10.0  # seconds
BURST = 5  # records per event per window
_MAX_TEXT = 200  # characters of an error's text in a record


def raise_nofile_limit() -> tuple[int, int]:
    """Soft ``RLIMIT_NOFILE`` up to the hard limit (systemd's soft default is 1024); (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An infinite hard limit is capped by the kernel's nr_open: leave the soft one as it is.
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def accept_backlog(limits: HttpLimits) -> int:
    """The listen backlog, which is also how many connections asyncio accepts per wake-up."""
    return max(8, min(128, limits.fd_reserve // 4, limits.max_connections))


class RateLimitedLog:
    """At most ``burst`` records per event per ``window`` seconds; the rest are counted."""

    def __init__(self, *, window: float = WINDOW, burst: int = BURST) -> None:
        self.window = window
        self.burst = burst
        self._slots: dict[str, tuple[float, int, int]] = {}  # event -> (window start, sent, suppressed)

    def warning(self, event: str, now: float, **fields: Any) -> bool:
        """Log ``event`` unless its window's budget is spent; True when a record was written."""
        start, sent, suppressed = self._slots.get(event, (now, 0, 0))
        if now - start >= self.window:
            start, sent = now, 0
        if sent >= self.burst:
            self._slots[event] = (start, sent, suppressed + 1)
            return False
        if suppressed:
            fields["suppressed"] = suppressed
        log.warning(event, **fields)
        self._slots[event] = (start, sent + 1, 0)
        return True


def error_text(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    text = " ".join(str(exc).split())[:_MAX_TEXT]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ConnectionBudget:
    """The live connections, oldest activity first, and the admission rule."""

    def __init__(self, limits: HttpLimits, nofile: int, quiet: RateLimitedLog) -> None:
        self.limits = limits
        self.nofile = nofile
        self.cap = max(1, min(limits.max_connections, nofile - limits.fd_reserve))
        self.quiet = quiet
        self.conns: OrderedDict[LimitedHandler, None] = OrderedDict()
        self.refused: dict[str, int] = {}

    def admit(self, conn: LimitedHandler, fd: int, now: float) -> bool:
        """Admit ``conn``; when full (cap or reserve) it replaces the longest-idle one, or is refused."""
        low_fds = fd >= 0 and fd >= self.nofile - self.limits.fd_reserve
        if low_fds or len(self.conns) >= self.cap:
            reason = "fd_reserve" if low_fds else "connection_cap"
            idle = next((c for c in self.conns if not c.busy), None)
            if idle is None:
                return self._refuse(reason, fd, now)
            # Net zero descriptors: the evicted one's is freed as this one's is kept.
            self.refused["evicted"] = self.refused.get("evicted", 0) + 1
            self.quiet.warning(
                "http.connection_evicted",
                now,
                reason=reason,
                fd=fd,
                connections=len(self.conns),
                cap=self.cap,
            )
            idle.drop()
        self.conns[conn] = None
        return True

    def _refuse(self, reason: str, fd: int, now: float) -> bool:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self.quiet.warning(
            "http.connection_refused",
            now,
            reason=reason,
            fd=fd,
            nofile=self.nofile,
            connections=len(self.conns),
            cap=self.cap,
        )
        return False

    def touch(self, conn: LimitedHandler) -> None:
        if conn in self.conns:
            self.conns.move_to_end(conn)

    def gone(self, conn: LimitedHandler) -> None:
        self.conns.pop(conn, None)


class LimitedHandler(RequestHandler):
    """aiohttp's connection protocol under a :class:`ConnectionBudget` and a header timeout."""

    def __init__(
        self, manager: Server, *, budget: ConnectionBudget, loop: asyncio.AbstractEventLoop, **kwargs: Any
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self.budget = budget
        self.busy = False
        self._header_deadline: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        if not self.budget.admit(self, fd, time.monotonic()):
            self.drop()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_deadline()
        self.budget.gone(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.busy and self._header_deadline is None:
            timeout = self.budget.limits.header_timeout
            self._header_deadline = self._loop.call_later(timeout, self._headers_too_slow)
        super().data_received(data)

    def request_started(self) -> None:
        """Called with the complete headers (the middleware): the header timer stops."""
        self.busy = True
        self._cancel_deadline()
        self.budget.touch(self)

    def request_finished(self) -> None:
        self.busy = False
        self.budget.touch(self)

    def drop(self) -> None:
        """Close now (RST): the descriptor is freed at once, nothing more is read or written."""
        self._cancel_deadline()
        self.budget.gone(self)
        self.force_close()
        if self._transport is not None:
            self._transport.abort()  # type: ignore[attr-defined]

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.busy:
            self.budget.quiet.warning(
                "http.client_too_slow", time.monotonic(), timeout=self.budget.limits.header_timeout
            )
            self.drop()

    def _cancel_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A malformed request or a failing handler: one short line, no traceback, no locals."""
        exc = kw.get("exc_info")
        self.budget.quiet.warning(
            "http.request_error",
            time.monotonic(),
            error=error_text(exc if isinstance(exc, BaseException) else None),
        )


def accept_error_handler(
    quiet: RateLimitedLog,
    previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """A loop exception handler that turns ``accept()`` failures (EMFILE ...) into quiet lines.

    asyncio reports each one and retries a second later; under a burst that was thousands of
    records with tracebacks. Everything else goes to the previous (or the default) handler."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "socket.accept()" in str(context.get("message", "")):
            exc = context.get("exception")
            quiet.warning(
                "http.accept_failed",
                time.monotonic(),
                error=error_text(exc if isinstance(exc, BaseException) else None),
            )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    return handle
