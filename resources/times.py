"""UTC time helpers for the sources and the stores; this module imports nothing heavy (no pyarrow), so a
source adapter can use it on the report path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_iso(value) -> datetime | None:
    """The one ISO-8601 parser: a string (``Z``, an offset, or none, which means UTC) as an aware datetime
    in its own offset; None for anything else, a malformed string included (a source line's bad time)."""
    if value.__class__ is not str:
        return None
    try:
        ts = datetime.fromisoformat(value)  # Python 3.11+ reads the trailing "Z"
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def as_utc(value: datetime | str | None) -> datetime | None:
    """An ISO-8601 string (see `parse_iso`) or a datetime (naive: UTC) as an aware UTC datetime; None (or "")
    stays None; ValueError for a string that is not a time."""
    if value.__class__ is datetime and value.tzinfo is UTC:  # already one: the common case, kept cheap
        return value
    if value is None or value == "":
        return None
    if isinstance(value, str):
        parsed = parse_iso(value)
        if parsed is None:
            raise ValueError(f"{value!r} is not an ISO-8601 time")
        return parsed.astimezone(UTC)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def epoch_ms(value: datetime | None) -> int | None:
    """Milliseconds since the epoch of ``value`` (naive: UTC), below a millisecond dropped as Arrow's
    ``timestamp[ms]`` drops it; None stays None. `utc_from_ms` turns it back."""
    if value is None:
        return None
    return ((value if value.tzinfo else value.replace(tzinfo=UTC)) - _EPOCH) // _MILLISECOND


def utc_from_ms(millis: int) -> datetime:
    """An aware UTC datetime from milliseconds since the epoch (see `epoch_ms`)."""
    return _EPOCH + timedelta(milliseconds=millis)


def utc_from_us(micros: int) -> datetime:
    """An aware UTC datetime from microseconds since the epoch (DuckDB's ``epoch_us(ts)``). Reports fetch times
    this way: DuckDB hands a TIMESTAMPTZ to Python through pytz, whose import and zone load cost a fresh
    process more than the report query."""
    return _EPOCH + timedelta(microseconds=micros)
