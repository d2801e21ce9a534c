"""LanceStore: the one door to the Lance memory tables (records, edges, events).

Contract:
- Three tables with explicit schemas, created on first use. ``open_table(name)`` always returns a
  fresh handle, so a caller sees the latest version.
- A table is created only when its folder does not exist. A folder Lance cannot open (``_versions/``
  missing or unreadable) raises `LanceTableUnreadable` and is never written over: the memory it held
  is not silently replaced by an empty table. ``set_aside(name)`` moves such a folder out of the way
  (kept under ``broken/``) so ``sessionlake memory rebuild`` can re-derive it.
- ``upsert_records`` / ``upsert_edges`` write a whole batch in ONE commit (``merge_insert`` on ``id``),
  and nothing at all for an empty batch: a retried run changes nothing and versions stay few.
  Re-upserting a record keeps its provenance and ``created_at``; a null provenance reads as ``[]``.
- After every records upsert the full-text index on ``records.text`` is created or brought up to date
  (one more commit), so recall stays an index lookup.
- Provenance is a JSON list per record. ``append_provenance_batch(pairs)`` appends any number of
  entries to any number of records in one commit; ``record_provenance`` routes through the
  write-behind queue when it is enabled (``enable_provenance_queue``), else writes on the caller's thread.
- Embeddings are optional: with ``embedder`` set (a LanceDB embedding-registry name), ``records``
  gets a ``vector`` column that LanceDB fills from ``text`` on every write.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa

from resources.ids import new_ulid, stable_id

RECORDS = "records"
EDGES = "edges"
EVENTS = "events"
TABLE_NAMES = (RECORDS, EDGES, EVENTS)
SCHEMA_VERSION = 1
TEXT_INDEX = "text_idx"
ID_INDEX = "id_idx"
VECTOR_COLUMN = "vector"
ID_LOOKUP_CHUNK = 2000
"""Ids per ``id IN (...)`` lookup, so one filter never grows unbounded."""
BROKEN_DIR = "broken"
"""Under the Lance root: table folders set aside because Lance could not open them."""
OPEN_RETRY_SEC = 0.2
"""A folder that will not open is tried once more after this pause: another process may be creating it."""

_TS = pa.timestamp("us", tz="UTC")

RECORDS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("tier", pa.string(), nullable=False),
    pa.field("text", pa.string()),
    pa.field("role", pa.string()),
    pa.field("session_id", pa.string()),
    pa.field("session_key", pa.string()),
    pa.field("project", pa.string()),
    pa.field("timestamp", _TS),
    pa.field("model", pa.string()),
    pa.field("git_branch", pa.string()),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("language", pa.string()),
    pa.field("provenance", pa.string()),
    pa.field("created_at", _TS),
    pa.field("updated_at", _TS),
    pa.field("schema_version", pa.int32()),
])

EDGES_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("src", pa.string(), nullable=False),
    pa.field("dst", pa.string(), nullable=False),
    pa.field("edge_type", pa.string(), nullable=False),
    pa.field("weight", pa.float32()),
    pa.field("updated_at", _TS),
])

EVENTS_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("ts", _TS),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("severity", pa.string()),
    pa.field("data", pa.string()),
])

_SCHEMAS = {RECORDS: RECORDS_SCHEMA, EDGES: EDGES_SCHEMA, EVENTS: EVENTS_SCHEMA}
_UPSERT_SCHEMA = pa.schema([f for f in RECORDS_SCHEMA if f.name != "provenance"])
SEVERITIES = ("debug", "info", "warning", "error")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | str | None) -> datetime | None:
    """Parse an ISO-8601 string (``Z`` allowed) or a datetime into an aware UTC datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_record(
    id: str,
    text: str,
    *,
    tier: str,
    role: str | None = None,
    session_id: str | None = None,
    session_key: str | None = None,
    project: str | None = None,
    timestamp: datetime | str | None = None,
    model: str | None = None,
    git_branch: str | None = None,
    tags: Iterable[str] = (),
    language: str | None = None,
) -> dict:
    """A complete ``records`` row: empty provenance, created/updated now, the current schema version."""
    now = utcnow()
    return {
        "id": id, "tier": tier, "text": text, "role": role, "session_id": session_id,
        "session_key": session_key, "project": project, "timestamp": as_utc(timestamp), "model": model,
        "git_branch": git_branch, "tags": sorted(set(tags)), "language": language, "provenance": "[]",
        "created_at": now, "updated_at": now, "schema_version": SCHEMA_VERSION,
    }


def edge_id(src: str, dst: str, edge_type: str) -> str:
    return stable_id("edge", src, dst, edge_type)


def new_edge(src: str, dst: str, edge_type: str, weight: float = 1.0) -> dict:
    """A complete ``edges`` row whose id depends only on (src, dst, edge_type)."""
    return {"id": edge_id(src, dst, edge_type), "src": src, "dst": dst, "edge_type": edge_type,
            "weight": float(weight), "updated_at": utcnow()}


def sql_str(value: str) -> str:
    """A SQL string literal for a Lance filter."""
    return "'" + str(value).replace("'", "''") + "'"


def _id_filter(ids: Sequence[str]) -> str:
    return "id IN (" + ",".join(sql_str(i) for i in ids) + ")"


def _dedupe(rows: list[dict]) -> list[dict]:
    """Last row per id wins (merge_insert rejects a source with duplicate keys)."""
    return list({row["id"]: row for row in rows}.values())


class LanceTableUnreadable(RuntimeError):
    """A table's folder exists but Lance cannot open it; it is left exactly as it is."""

    def __init__(self, name: str, path: Path, cause: BaseException):
        self.table, self.path = name, path
        super().__init__(
            f"Lance table {name!r} at {path} exists but cannot be opened ({type(cause).__name__}: {cause}); "
            "it was left untouched. `sessionlake memory rebuild` sets it aside and re-derives records and "
            "edges from the archive")


class LanceStore:
    """The Lance database under ``path``; see the module docstring for the contract."""

    def __init__(
        self,
        path: Path | str,
        *,
        embedder: str | None = None,
        embedder_model: str | None = None,
        provenance_overflow_dir: Path | str | None = None,
    ) -> None:
        self.root = Path(path)
        self.root.mkdir(parents=True, exist_ok=True)
        import lancedb  # here, not at the top: importing it costs ~2 s, and Dagster loads this module to
        # build definitions (sensor intervals, table names) long before any table is opened

        self.db = lancedb.connect(str(self.root))
        self.provenance_overflow_dir = Path(provenance_overflow_dir) if provenance_overflow_dir else None
        self.embedding = _load_embedder(embedder, embedder_model) if embedder else None
        self._queue = None
        self._queue_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> LanceStore:
        return cls(settings.lance_dir, embedder=settings.embedder, embedder_model=settings.embedder_model,
                   provenance_overflow_dir=settings.provenance_overflow_dir)

    # -- tables ---------------------------------------------------------------------------------------

    def table_path(self, name: str) -> Path:
        return self.root / f"{name}.lance"

    def open_table(self, name: str):
        """A fresh handle on table ``name``, created with its schema only if its folder does not exist.

        Raises `LanceTableUnreadable` when the folder exists and Lance cannot open it.
        """
        if name not in _SCHEMAS:
            raise ValueError(f"unknown table {name!r}; expected one of {', '.join(TABLE_NAMES)}")
        path = self.table_path(name)
        if not os.path.lexists(path):
            return self._create_table(name)
        try:
            return self.db.open_table(name)
        except Exception:
            time.sleep(OPEN_RETRY_SEC)
        try:
            return self.db.open_table(name)
        except Exception as exc:
            raise LanceTableUnreadable(name, path, exc) from exc

    def unreadable_tables(self, names: Iterable[str] = TABLE_NAMES) -> dict[str, LanceTableUnreadable]:
        """The tables among ``names`` whose folder exists but cannot be opened, with the error."""
        found = {}
        for name in names:
            try:
                self.open_table(name)
            except LanceTableUnreadable as exc:
                found[name] = exc
        return found

    def set_aside(self, name: str) -> Path:
        """Move the folder of table ``name`` to ``broken/<name>.lance-<UTC time>`` and return the new path.

        The next ``open_table`` creates the table afresh; the old files stay for a person to inspect.
        """
        target = self.root / BROKEN_DIR / f"{name}.lance-{utcnow().strftime('%Y%m%dT%H%M%S%fZ')}"
        target.parent.mkdir(exist_ok=True)
        os.rename(self.table_path(name), target)
        return target

    def _create_table(self, name: str):
        schema = _SCHEMAS[name]
        functions = None
        if name == RECORDS and self.embedding is not None:
            from lancedb.embeddings import EmbeddingFunctionConfig

            schema = schema.append(pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), self.embedding.ndims())))
            functions = [EmbeddingFunctionConfig(source_column="text", vector_column=VECTOR_COLUMN,
                                                 function=self.embedding)]
        return self.db.create_table(name, schema=schema, exist_ok=True, embedding_functions=functions)

    def count(self, name: str) -> int:
        return self.open_table(name).count_rows()

    def version(self, name: str) -> int:
        """The table's current Lance version number (each commit adds one)."""
        return self.open_table(name).version

    def has_vectors(self) -> bool:
        return VECTOR_COLUMN in self.open_table(RECORDS).schema.names

    # -- writes ---------------------------------------------------------------------------------------

    def upsert_records(self, rows: list[dict]) -> int:
        """Insert or update ``rows`` by id in one commit, keep existing provenance/created_at; refresh FTS.

        The ``provenance`` column is never sent: an updated record keeps whatever the provenance
        writer appended, even concurrently, and a new one starts with null (read as an empty list).
        """
        if not rows:
            return 0
        rows = _dedupe(rows)
        table = self.open_table(RECORDS)
        created = self._existing(table, [r["id"] for r in rows], ["id", "created_at"])
        prepared = []
        for row in rows:
            full = {**new_record(row["id"], row.get("text") or "", tier=row.get("tier") or "episodic"), **row}
            full["timestamp"] = as_utc(full.get("timestamp"))
            old = created.get(row["id"])
            if old is not None:
                full["created_at"] = old["created_at"]
            prepared.append(full)
        data = pa.Table.from_pylist(prepared, schema=_UPSERT_SCHEMA)
        table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        self.refresh_indexes(table)
        return len(prepared)

    def upsert_edges(self, rows: list[dict]) -> int:
        """Insert or update edges by their stable id (hash of src, dst, edge_type) in one commit."""
        if not rows:
            return 0
        rows = _dedupe([{**r, "id": edge_id(r["src"], r["dst"], r["edge_type"]),
                         "weight": float(r.get("weight", 1.0)), "updated_at": r.get("updated_at") or utcnow()}
                        for r in rows])
        data = pa.Table.from_pylist(rows, schema=EDGES_SCHEMA)
        table = self.open_table(EDGES)
        table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        return len(rows)

    def refresh_indexes(self, table=None) -> None:
        """Create the FTS index on ``records.text`` and the id index, or add unindexed rows to them."""
        from lancedb.index import FTS, BTree

        table = table if table is not None else self.open_table(RECORDS)
        names = {index.name for index in table.list_indices()}
        if ID_INDEX not in names:
            table.create_index("id", config=BTree(), name=ID_INDEX)
        if TEXT_INDEX not in names:
            table.create_index("text", config=FTS(with_position=True), name=TEXT_INDEX)
            return
        stats = table.index_stats(TEXT_INDEX)
        if stats is not None and stats.num_unindexed_rows > 0:
            table.to_lance().optimize.optimize_indices(index_names=[TEXT_INDEX, ID_INDEX])

    # -- reads ----------------------------------------------------------------------------------------

    def _existing(self, table, ids: Sequence[str], columns: list[str]) -> dict[str, dict]:
        found: dict[str, dict] = {}
        if not ids or table.count_rows() == 0:
            return found
        for start in range(0, len(ids), ID_LOOKUP_CHUNK):
            chunk = ids[start : start + ID_LOOKUP_CHUNK]
            query = table.search().where(_id_filter(chunk)).select(columns).limit(len(chunk))
            for row in query.to_arrow().to_pylist():
                found[row["id"]] = row
        return found

    def get_many(self, ids: Sequence[str]) -> dict[str, dict]:
        """Full records by id (provenance decoded to a list); missing ids are absent from the result."""
        table = self.open_table(RECORDS)
        columns = [n for n in table.schema.names if n != VECTOR_COLUMN]
        rows = self._existing(table, list(dict.fromkeys(ids)), columns)
        for row in rows.values():
            row["provenance"] = orjson.loads(row["provenance"] or "[]")
        return rows

    def get(self, record_id: str) -> dict | None:
        """The record with id ``record_id`` (provenance decoded to a list), or None."""
        return self.get_many([record_id]).get(record_id)

    def records_where(self, where: str, columns: list[str] | None = None) -> list[dict]:
        """Every record matching a Lance SQL filter (provenance left as stored JSON)."""
        table = self.open_table(RECORDS)
        query = table.search().where(where).limit(None)
        if columns:
            query = query.select(columns)
        return query.to_arrow().to_pylist()

    # -- provenance -----------------------------------------------------------------------------------

    def append_provenance_batch(self, pairs: Sequence[tuple[str, dict]]) -> int:
        """Append each ``(record_id, entry)`` to its record's provenance list, in order, in ONE commit.

        Ids that do not exist are ignored. Returns the number of records changed. Only the
        ``provenance`` column is sent, so Lance rewrites that one column in place, the rows stay in the
        text index, and ``updated_at`` keeps meaning "content last changed" (entries carry their own ts).
        """
        if not pairs:
            return 0
        table = self.open_table(RECORDS)
        ids = list(dict.fromkeys(record_id for record_id, _ in pairs))
        current = self._existing(table, ids, ["id", "provenance"])
        lists = {rid: orjson.loads(row["provenance"] or "[]") for rid, row in current.items()}
        for record_id, entry in pairs:
            if record_id in lists:
                lists[record_id].append(entry)
        if not lists:
            return 0
        data = pa.table({
            "id": pa.array(list(lists), pa.string()),
            "provenance": pa.array([orjson.dumps(v).decode() for v in lists.values()], pa.string()),
        })
        # through Lance itself: LanceDB's merge would try to re-embed ``text``, which this source lacks
        table.to_lance().merge_insert("id").when_matched_update_all().execute(data)
        return len(lists)

    def record_provenance(self, pairs: Sequence[tuple[str, dict]]) -> None:
        """Queue the pairs when the write-behind queue is on, else append them now on this thread.

        The synchronous path also refreshes the text index (a no-op unless the write moved rows out of
        it): an unindexed row's BM25 score would differ from its indexed neighbours'.
        """
        queue = self._queue
        if queue is not None:
            queue.enqueue(pairs)
        elif self.append_provenance_batch(pairs):
            self.refresh_indexes()

    def enable_provenance_queue(self, coalesce_ms: float = 50, **options):
        """Start (once) a `ProvenanceWriteQueue` that recall's provenance goes through; returns it."""
        from resources.provenance_queue import ProvenanceWriteQueue

        with self._queue_lock:
            if self._queue is None:
                options.setdefault("overflow_dir", self.provenance_overflow_dir)
                queue = ProvenanceWriteQueue(self, coalesce_ms=coalesce_ms, **options)
                queue.start()
                self._queue = queue
            return self._queue

    def disable_provenance_queue(self, timeout: float | None = None) -> None:
        """Stop the queue after draining it; provenance is written synchronously again."""
        with self._queue_lock:
            queue, self._queue = self._queue, None
        if queue is not None:
            queue.stop(timeout)

    @property
    def provenance_queue(self):
        return self._queue


def _load_embedder(name: str, model: str | None):
    """Build an embedding function from the LanceDB registry; a clear error if it is unknown or missing."""
    from lancedb.embeddings import get_registry

    try:
        factory = get_registry().get(name)
    except KeyError as exc:
        raise ValueError(f"SESSIONLAKE_EMBEDDER={name!r} is not a LanceDB embedding-registry name") from exc
    return factory.create(name=model) if model else factory.create()


# -- events -------------------------------------------------------------------------------------------

def write_event(store: LanceStore, kind: str, data: dict | None = None, severity: str = "info") -> str:
    """Append one operational event (one commit); returns its id (a ULID)."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    event_id = new_ulid()
    row = {"id": event_id, "ts": utcnow(), "kind": kind, "severity": severity,
           "data": orjson.dumps(data or {}, default=str).decode()}
    store.open_table(EVENTS).add(pa.Table.from_pylist([row], schema=EVENTS_SCHEMA))
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
