"""Property tests of the lease renewal/loss state machine with an injected clock."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.locks.lease import LeaseHandle, LeaseState

TTL = st.floats(min_value=0.05, max_value=600.0, allow_nan=False)
# (kind, dt): advance the clock by dt, then apply one event.
EVENTS = st.lists(
    st.tuples(st.sampled_from(["ok", "error", "rejected", "tick"]), st.floats(min_value=0.0, max_value=2.0)),
    max_size=60,
)


@given(ttl=TTL, events=EVENTS)
def test_never_believes_held_past_ttl_and_loss_is_sticky(ttl: float, events: list[tuple[str, float]]) -> None:
    s = LeaseState(ttl=ttl, last_ok=0.0)
    now = 0.0
    last_accepted_send = 0.0
    declared = 0
    for kind, frac in events:
        now += frac * ttl
        was_lost = s.lost
        if kind == "ok":
            fired = s.on_renew_ok(now)
            if not s.lost:
                last_accepted_send = now
        elif kind == "error":
            fired = s.on_renew_error(now)
        elif kind == "rejected":
            fired = s.on_renew_rejected(now)
        else:
            fired = s.on_tick(now)
        declared += fired
        if was_lost:
            assert s.lost and not fired  # never revived, never declared twice
        if not s.lost:
            # Safety: holding implies the last accepted request was sent < ttl ago.
            assert now < last_accepted_send + ttl
            assert s.next_action_at(now) <= s.expires_at
        if kind == "rejected":
            assert s.lost
    assert declared == (1 if s.lost else 0)


@given(ttl=TTL, jitter=st.lists(st.floats(min_value=0.0, max_value=0.99), min_size=1, max_size=50))
def test_renewing_on_schedule_never_loses(ttl: float, jitter: list[float]) -> None:
    s = LeaseState(ttl=ttl, last_ok=0.0)
    now = 0.0
    for j in jitter:
        due = s.next_action_at(now)
        assert due == pytest.approx(s.last_ok + ttl / 3)
        now = now + (due - now) * j  # act at or before the scheduled renewal
        assert not s.on_tick(now)
        assert not s.on_renew_ok(now)
    assert not s.lost


@given(ttl=TTL, steps=st.lists(st.floats(min_value=0.001, max_value=0.5), min_size=1, max_size=80))
def test_unreachable_declares_exactly_at_expiry(ttl: float, steps: list[float]) -> None:
    s = LeaseState(ttl=ttl, last_ok=0.0)
    now = 0.0
    for step in steps:
        now += step * ttl
        expires = s.expires_at
        fired = s.on_renew_error(now)
        assert fired == (now >= expires)
        if now < s.last_ok + ttl - s.margin:
            assert not s.lost
        else:
            assert s.lost
            break
    # Between errors the renewer retries no later than the expiry.
    assert s.lost or s.next_action_at(now) <= s.expires_at


def test_late_success_after_expiry_is_loss() -> None:
    s = LeaseState(ttl=1.0, last_ok=0.0)
    assert s.on_renew_ok(5.0)
    assert s.lost and "expired" in (s.lost_reason or "")


def test_bad_ttl_rejected() -> None:
    with pytest.raises(ValueError, match="ttl"):
        LeaseState(ttl=0.0, last_ok=0.0)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(min_value=2, max_value=8))
def test_handle_fires_callback_once_across_threads(n: int) -> None:
    calls: list[str] = []
    h = LeaseHandle("training:square8_2p", LeaseState(ttl=1.0, last_ok=0.0), on_lost=calls.append)
    barrier = threading.Barrier(n)

    def hit() -> None:
        barrier.wait()
        h.apply(LeaseState.on_renew_error, 10.0)
        h.apply(LeaseState.on_tick, 11.0)

    threads = [threading.Thread(target=hit) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and h.lost_event.is_set() and h.is_lost(0.0)


def test_released_handle_never_fires() -> None:
    calls: list[str] = []
    h = LeaseHandle("x", LeaseState(ttl=1.0, last_ok=0.0), on_lost=calls.append)
    h.mark_released()
    assert not h.apply(LeaseState.on_renew_rejected, 0.5)
    assert calls == [] and not h.is_lost(100.0)
