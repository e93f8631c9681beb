"""Time as an argument: every decision takes an optional timezone-aware ``now``."""

from __future__ import annotations

from datetime import UTC, datetime


def resolve_now(now: datetime | None) -> datetime:
    """``now`` (must be timezone-aware) or the current UTC time."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime (got naive {now.isoformat()})")
    return now


def ts(now: datetime | None) -> float:
    """Unix seconds of ``now`` (current time when None)."""
    return resolve_now(now).timestamp()


def to_dt(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def opt_ts(value: datetime | None) -> float | None:
    """Unix seconds of an optional aware datetime (validated)."""
    return None if value is None else resolve_now(value).timestamp()
