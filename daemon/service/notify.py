"""sd_notify(3) and the systemd watchdog, without third-party packages.

The protocol is one ``AF_UNIX``/``SOCK_DGRAM`` datagram per message to
``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket); everything is a
no-op when the variable is unset. Values come from the caller: only
:meth:`SystemdNotifier.from_environ` looks at an environment mapping, and it is
handed one by ``cli.main``.

:class:`Watchdog` pings ``WATCHDOG=1`` only while the event loop reports
progress through :meth:`Watchdog.beat`, so a stuck loop lets systemd's
``WatchdogSec`` expire instead of being kept alive by a timer.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from types import TracebackType

import structlog

log = structlog.get_logger(__name__)

NOTIFY_ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
# A blocked notify socket must not stall the event loop for long.
_SEND_TIMEOUT_S = 1.0


def child_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` without the notify/watchdog variables (for trainer children).

    Same effect as ``sd_notify(unset_environment=1)`` for the child only: a
    trainer must never send READY/WATCHDOG on the daemon's behalf.
    """
    return {k: v for k, v in environ.items() if k not in NOTIFY_ENV_VARS}


def _socket_address(notify_socket: str) -> str | bytes | None:
    if notify_socket.startswith("@"):
        # Abstract namespace: leading NUL, no trailing NUL.
        return b"\0" + notify_socket[1:].encode()
    if notify_socket.startswith("/"):
        return notify_socket
    return None


def _positive_int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if value > 0 else None


class SystemdNotifier:
    """Sends READY/STATUS/STOPPING/WATCHDOG/EXTEND_TIMEOUT_USEC to systemd.

    ``watchdog_pid`` follows ``sd_watchdog_enabled(3)``: when set, the watchdog
    is enabled only if it equals ``pid`` (default: this process), so a child that
    inherited the variables stays silent.
    """

    def __init__(
        self,
        notify_socket: str | None,
        watchdog_usec: int | None,
        watchdog_pid: int | None,
        *,
        pid: int | None = None,
    ) -> None:
        self.notify_socket = notify_socket or None
        self.watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self.watchdog_pid = watchdog_pid
        self.pid = pid
        self._address = _socket_address(notify_socket) if notify_socket else None
        self._sock: socket.socket | None = None
        self._warned_bad_address = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, pid: int | None = None) -> SystemdNotifier:
        """Build from ``NOTIFY_SOCKET``/``WATCHDOG_USEC``/``WATCHDOG_PID`` in ``environ``."""
        return cls(
            environ.get("NOTIFY_SOCKET") or None,
            _positive_int(environ.get("WATCHDOG_USEC")),
            _positive_int(environ.get("WATCHDOG_PID")),
            pid=pid,
        )

    # -- state ---------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True when a usable ``NOTIFY_SOCKET`` was given."""
        return self._address is not None

    @property
    def watchdog_enabled(self) -> bool:
        if not self.enabled or self.watchdog_usec is None:
            return False
        if self.watchdog_pid is None:
            return True
        own = self.pid if self.pid is not None else os.getpid()
        return self.watchdog_pid == own

    @property
    def watchdog_timeout(self) -> float | None:
        """``WatchdogSec`` in seconds, or None when the watchdog is off for us."""
        return self.watchdog_usec / 1_000_000 if self.watchdog_enabled and self.watchdog_usec else None

    @property
    def watchdog_interval(self) -> float | None:
        """How often to ping: half of ``WATCHDOG_USEC`` (``sd_watchdog_enabled(3)``)."""
        timeout = self.watchdog_timeout
        return timeout / 2 if timeout is not None else None

    # -- I/O -----------------------------------------------------------------------------
    def open(self) -> None:
        """Create the datagram socket (idempotent; no-op when notifications are off)."""
        if self._sock is not None:
            return
        if self._address is None:
            if self.notify_socket and not self._warned_bad_address:
                self._warned_bad_address = True
                log.warning("notify.unsupported_socket", notify_socket=self.notify_socket)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.settimeout(_SEND_TIMEOUT_S)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SystemdNotifier:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` as one newline-separated datagram; True if it was sent.

        Failures are logged, never raised: losing a STATUS line must not stop
        training (a lost READY=1 shows up as a start timeout in systemd).
        """
        if self._address is None:
            self.open()  # only to warn once about an unsupported address
            return False
        self.open()
        assert self._sock is not None
        payload = "\n".join(fields).encode()
        try:
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            log.warning("notify.send_failed", message=fields[0] if fields else "", error=str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def stopping(self, status: str | None = None) -> bool:
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        return self.notify(*fields)

    def watchdog(self) -> bool:
        """Send ``WATCHDOG=1`` (only when the watchdog is enabled for this process)."""
        if not self.watchdog_enabled:
            return False
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, usec: int) -> bool:
        """Ask for ``usec`` more before the start/stop timeout fires (re-send within it)."""
        if usec <= 0:
            raise ValueError(f"extend_timeout: usec must be positive, got {usec}")
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(usec)}")


def _one_line(text: str) -> str:
    # A newline would start a new (bogus) assignment in the datagram.
    return " ".join(text.splitlines()).strip()


class Watchdog:
    """Progress-gated watchdog: ``beat`` from the loop's tick, ``maybe_ping`` on a timer.

    ``maybe_ping(now)`` sends ``WATCHDOG=1`` only if a beat happened within the
    last ``progress_window`` seconds (default: the full ``WatchdogSec``) and the
    last ping is at least ``ping_every`` old (default: half the interval, so a
    late timer still stays inside the timeout). Times are monotonic seconds.
    """

    def __init__(
        self,
        notifier: SystemdNotifier,
        *,
        progress_window: float | None = None,
        ping_every: float | None = None,
    ) -> None:
        self.notifier = notifier
        timeout = notifier.watchdog_timeout
        interval = notifier.watchdog_interval
        self.progress_window = progress_window if progress_window is not None else timeout
        self.ping_every = ping_every if ping_every is not None else (interval / 2 if interval else None)
        self.last_beat: float | None = None
        self.last_ping: float | None = None
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self.notifier.watchdog_enabled

    def beat(self, now_monotonic: float) -> None:
        """Record that the event loop made progress at ``now_monotonic``."""
        if self.last_beat is None or now_monotonic > self.last_beat:
            self.last_beat = now_monotonic

    def progressing(self, now_monotonic: float) -> bool:
        if self.last_beat is None or self.progress_window is None:
            return False
        return now_monotonic - self.last_beat <= self.progress_window

    def maybe_ping(self, now_monotonic: float) -> bool:
        """Ping if enabled, progressing and due; True when ``WATCHDOG=1`` was sent."""
        if not self.enabled or not self.progressing(now_monotonic):
            return False
        if (
            self.last_ping is not None
            and self.ping_every is not None
            and now_monotonic - self.last_ping < self.ping_every
        ):
            return False
        if not self.notifier.watchdog():
            return False
        self.last_ping = now_monotonic
        self.pings += 1
        return True

    async def run(
        self,
        *,
        period: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Call :meth:`maybe_ping` every ``period`` seconds until cancelled (no-op if off)."""
        if not self.enabled:
            return
        step = period if period is not None else max(0.5, (self.ping_every or 1.0) / 2)
        while True:
            self.maybe_ping(clock())
            await asyncio.sleep(step)
