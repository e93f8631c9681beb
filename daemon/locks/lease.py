"""The lease renewal/loss state machine (pure) and the per-acquisition lease handle.

:class:`LeaseState` holds no clock: every method takes ``now`` (seconds on the
local monotonic clock), so the renew/loss rules are property-tested with an
injected clock. :class:`LeaseHandle` wraps one state for one acquisition and
fires the loss exactly once (callback + events), from whichever thread or task
notices it first.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

LostCallback = Callable[[str], None]


@dataclass
class LeaseState:
    """Renewal decisions for one lease of ``ttl`` seconds.

    The lease is taken to end ``ttl - margin`` after the *send* time of the last
    successful acquire/renew request. The server set the expiry no earlier than
    that send time, so the local view expires first: the holder gives up before
    Redis could hand the lock to someone else (apart from clock-rate drift,
    which ``margin`` covers).
    """

    ttl: float
    last_ok: float
    margin: float = -1.0
    renew_every: float = -1.0
    retry_every: float = -1.0
    last_error_at: float | None = None
    errors: int = 0
    lost: bool = False
    lost_reason: str | None = None

    def __post_init__(self) -> None:
        if not self.ttl > 0 or not math.isfinite(self.ttl):
            raise ValueError(f"ttl must be a positive number of seconds (got {self.ttl!r})")
        if self.margin < 0:
            self.margin = min(self.ttl * 0.01 + 0.002, self.ttl / 10)
        if self.renew_every <= 0:
            self.renew_every = self.ttl / 3
        if self.retry_every <= 0:
            self.retry_every = self.ttl / 10

    @property
    def expires_at(self) -> float:
        return self.last_ok + self.ttl - self.margin

    def remaining(self, now: float) -> float:
        return 0.0 if self.lost else max(0.0, self.expires_at - now)

    def should_declare_lost(self, now: float) -> bool:
        """True when the lease may have expired and loss was not declared yet."""
        return not self.lost and now >= self.expires_at

    def next_action_at(self, now: float) -> float:
        """When the renewer should act next: renew, retry, or declare the loss."""
        if self.lost:
            return math.inf
        if self.last_error_at is not None:
            due = max(now, self.last_error_at + self.retry_every)
        else:
            due = self.last_ok + self.renew_every
        return min(due, self.expires_at)

    def on_renew_ok(self, sent_at: float) -> bool:
        """A renewal sent at ``sent_at`` was accepted. Returns True if this declared the loss."""
        if self.lost or sent_at < self.last_ok:
            return False
        if sent_at >= self.expires_at:
            # Accepted, but our clock says the lease had already run out before
            # the request left: someone may have held it meanwhile.
            return self.declare_lost("renewed only after the local lease had expired")
        self.last_ok = sent_at
        self.last_error_at = None
        self.errors = 0
        return False

    def on_renew_rejected(self, now: float) -> bool:
        """The server says we no longer own the key. Returns True if this declared the loss."""
        return self.declare_lost("renewal rejected: the lock is no longer ours")

    def on_renew_error(self, now: float) -> bool:
        """Redis could not be reached. Returns True if this declared the loss."""
        if self.lost:
            return False
        self.last_error_at = now
        self.errors += 1
        if now >= self.expires_at:
            return self.declare_lost(
                f"redis unreachable for {now - self.last_ok:.3f}s (ttl {self.ttl:.3f}s, {self.errors} errors)"
            )
        return False

    def on_tick(self, now: float) -> bool:
        """Clock check without I/O. Returns True if this declared the loss."""
        if self.should_declare_lost(now):
            return self.declare_lost(
                f"lease expired locally {now - self.last_ok:.3f}s after the last renewal"
            )
        return False

    def declare_lost(self, reason: str) -> bool:
        if self.lost:
            return False
        self.lost = True
        self.lost_reason = reason
        return True


@dataclass
class LeaseHandle:
    """One acquisition: its state, its loss signal, and its release flag (thread-safe)."""

    name: str
    state: LeaseState
    on_lost: LostCallback | None = None
    mutex: threading.Lock = field(default_factory=threading.Lock)
    lost_event: threading.Event = field(default_factory=threading.Event)
    async_lost: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    released: bool = False

    def apply(self, transition: Callable[[LeaseState, float], bool], now: float) -> bool:
        """Run ``transition(state, now)`` under the mutex; fire the loss if it declared one."""
        return self._apply(lambda: transition(self.state, now))

    def lose(self, reason: str) -> bool:
        return self._apply(lambda: self.state.declare_lost(reason))

    def _apply(self, decide: Callable[[], bool]) -> bool:
        with self.mutex:
            if self.released:
                return False
            fired = decide()
            reason = self.state.lost_reason
        if fired:
            self._fire(reason or "lost")
        return fired

    def is_lost(self, now: float) -> bool:
        # The holder must not keep believing it holds the lock while the
        # renewer is stuck in a call: the clock alone also says "lost".
        with self.mutex:
            return self.state.lost or (not self.released and now >= self.state.expires_at)

    def mark_released(self) -> None:
        with self.mutex:
            self.released = True

    def _fire(self, reason: str) -> None:
        log.warning("lock.lost", lock=self.name, reason=reason)
        self.lost_event.set()
        if self.async_lost is not None and self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self.async_lost.set)
            except RuntimeError:  # loop already closed
                pass
        if self.on_lost is not None:
            try:
                self.on_lost(reason)
            except Exception:
                log.exception("lock.on_lost_failed", lock=self.name)
