"""UTC time helpers for the sources and the stores; this module imports nothing heavy (no pyarrow), so a
source adapter can use it on the report path."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | str | None) -> datetime | None:
    """Parse an ISO-8601 string (``Z`` allowed) or a datetime into an aware UTC datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
