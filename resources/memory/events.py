"""The Lance ``events`` table: operational events (optimize reports and skips, ingest stats, queue
spills), one commit per event, queried newest first."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa

from resources.ids import new_ulid
from resources.memory.schema import EVENTS, EVENTS_SCHEMA, sql_str
from resources.times import as_utc, utcnow

if TYPE_CHECKING:
    from resources.memory.lance import LanceStore

SEVERITIES = ("debug", "info", "warning", "error")


def write_event(store: LanceStore, kind: str, data: dict | None = None, severity: str = "info") -> str:
    """Append one operational event (one commit); returns its id (a ULID)."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    event_id = new_ulid()
    row = {"id": event_id, "ts": utcnow(), "kind": kind, "severity": severity,
           "data": orjson.dumps(data or {}, default=str).decode()}
    store.for_write(EVENTS).insert(pa.Table.from_pylist([row], schema=EVENTS_SCHEMA))
    return event_id


def query_events(
    store: LanceStore,
    kind: str | None = None,
    since: datetime | str | None = None,
    severity: str | None = None,
    limit: int = 100,
) -> list[dict]:
    """Events matching every given filter, newest first, ``data`` decoded back to a dict."""
    clauses = []
    if kind is not None:
        clauses.append(f"kind = {sql_str(kind)}")
    if severity is not None:
        clauses.append(f"severity = {sql_str(severity)}")
    if since is not None:
        clauses.append(f"ts >= TIMESTAMP {sql_str(as_utc(since).strftime('%Y-%m-%d %H:%M:%S.%f'))}")
    query = store.open_table(EVENTS).search().limit(None)
    if clauses:
        query = query.where(" AND ".join(clauses))
    table = query.to_arrow()
    if table.num_rows == 0:
        return []
    table = table.sort_by([("ts", "descending"), ("id", "descending")]).slice(0, max(limit, 0))
    rows = table.to_pylist()
    for row in rows:
        row["data"] = orjson.loads(row["data"] or "{}")
    return rows
