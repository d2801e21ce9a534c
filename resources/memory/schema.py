"""The Lance memory's tables as data: their names, schemas and index names, how a record and an edge are
made, and the error for a table that cannot be opened. `resources.memory.lance.LanceStore` and the
modules it calls (indexes, provenance, events, maintenance) import these from here, not from the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from resources.ids import stable_id
from resources.memory.table_names import EDGES, EVENTS, PROVENANCE, RECORDS
from resources.memory.table_names import TABLE_NAMES as TABLE_NAMES  # re-exported: callers import it from here
from resources.times import as_utc, utcnow

SCHEMA_VERSION = 1
TEXT_INDEX = "text_idx"
TEXT_INDEX_PARAMS = {"with_position": True, "base_tokenizer": "simple", "language": "English", "max_token_length": 40,
                     "lower_case": True, "stem": True, "remove_stop_words": True, "ascii_folding": True}
"""How the full-text index tokenizes (pylance's ``create_scalar_index`` arguments): LanceDB's
``FTS(with_position=True)``, which built the index before writes went through pylance; a test
compares them with the installed LanceDB's defaults."""
ID_INDEX = "id_idx"
VECTOR_COLUMN = "vector"
RECORD_ID_INDEX = "record_id_idx"
ID_LOOKUP_CHUNK = 2000
"""Ids per ``id IN (...)`` lookup, so one filter never grows unbounded."""
BROKEN_DIR = "broken"
"""Under the Lance root: table folders set aside because Lance could not open them."""
OPEN_RETRY_SEC = 0.2
"""A folder that will not open is tried once more after this pause: another process may be creating it."""
INDEX_DELTA_ROWS = 100
"""Unindexed rows that make a write index them as a new index segment (maintenance indexes them all).

Every query scans the unindexed rows (about 40 us per record for full text, measured with 7,000
records on the 2-core dev box); a segment of 20 rows costs ~10 KB, where rebuilding the whole
full-text index costs ~76 bytes per row of the table (0.53 MB at 7,000 rows)."""
INDEX_TIER_RATIO = 0.25
"""Maintenance merges an index into one segment (a full rewrite) once its recent rows reach this share
of its base segment's rows; until then it rewrites only the recent ones, see `refresh_indexes`."""

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

PROVENANCE_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("record_id", pa.string(), nullable=False),
    pa.field("ts", _TS),
    pa.field("cue", pa.string()),
    pa.field("session_id", pa.string()),
    pa.field("entry", pa.string()),
])
"""One row per provenance entry. ``id`` orders a record's entries; ``entry`` (JSON) is what ``get`` returns,
the other columns are there to query by."""

SCHEMAS = {RECORDS: RECORDS_SCHEMA, EDGES: EDGES_SCHEMA, EVENTS: EVENTS_SCHEMA, PROVENANCE: PROVENANCE_SCHEMA}


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
    """A complete ``records`` row: created/updated now, the current schema version."""
    now = utcnow()
    return {
        "id": id, "tier": tier, "text": text, "role": role, "session_id": session_id,
        "session_key": session_key, "project": project, "timestamp": as_utc(timestamp), "model": model,
        "git_branch": git_branch, "tags": sorted(set(tags)), "language": language,
        "created_at": now, "updated_at": now, "schema_version": SCHEMA_VERSION,
    }


RECORD_COLUMNS = ("id", "text", "role", "session_id", "session_key", "project", "timestamp", "model", "git_branch")
"""The ``records`` columns that differ from record to record of an ingest (`record_table` fills the rest)."""
RECORD_COLUMNS_SCHEMA = pa.schema([RECORDS_SCHEMA.field(name) for name in RECORD_COLUMNS])
EDGE_COLUMNS_SCHEMA = pa.schema([EDGES_SCHEMA.field(name) for name in ("id", "src", "dst")])
"""The ``edges`` columns that differ from edge to edge of an ingest (`edge_table` fills the rest)."""


def record_table(columns: pa.Table, tags: pa.Array, *, tier: str) -> pa.Table:
    """`new_record` for many records at once: ``columns`` holds `RECORD_COLUMNS` (`RECORD_COLUMNS_SCHEMA`),
    ``tags`` each record's sorted tags (``RECORDS_SCHEMA``'s type); created/updated now."""
    n = columns.num_rows
    now = pa.scalar(utcnow(), _TS)
    arrays = {**{name: columns.column(name) for name in RECORD_COLUMNS},
              "tier": pa.repeat(pa.scalar(tier), n), "tags": tags,
              "language": pa.nulls(n, pa.string()), "created_at": pa.repeat(now, n), "updated_at": pa.repeat(now, n),
              "schema_version": pa.repeat(pa.scalar(SCHEMA_VERSION, pa.int32()), n)}
    return pa.Table.from_arrays([arrays[name] for name in RECORDS_SCHEMA.names], schema=RECORDS_SCHEMA)


def edge_table(columns: pa.Table, edge_type: str) -> pa.Table:
    """`new_edge` for many edges of one type at once (``columns``: `EDGE_COLUMNS_SCHEMA`, ids their `edge_id`s),
    weight 1, updated now."""
    n = columns.num_rows
    return pa.Table.from_arrays(
        [columns.column("id"), columns.column("src"), columns.column("dst"), pa.repeat(pa.scalar(edge_type), n),
         pa.repeat(pa.scalar(1.0, pa.float32()), n), pa.repeat(pa.scalar(utcnow(), _TS), n)], schema=EDGES_SCHEMA)


def edge_id(src: str, dst: str, edge_type: str) -> str:
    return stable_id("edge", src, dst, edge_type)


def new_edge(src: str, dst: str, edge_type: str, weight: float = 1.0) -> dict:
    """A complete ``edges`` row whose id depends only on (src, dst, edge_type)."""
    return {"id": edge_id(src, dst, edge_type), "src": src, "dst": dst, "edge_type": edge_type,
            "weight": float(weight), "updated_at": utcnow()}


def sql_str(value: str) -> str:
    """A SQL string literal for a Lance filter."""
    return "'" + str(value).replace("'", "''") + "'"


class LanceTableUnreadable(RuntimeError):
    """A table's folder exists but Lance cannot open it; it is left exactly as it is."""

    def __init__(self, name: str, path: Path | str, cause: BaseException):
        self.table, self.path = name, path
        super().__init__(
            f"Lance table {name!r} at {path} exists but cannot be opened ({type(cause).__name__}: {cause}); "
            "it was left untouched. `sessionlake memory rebuild` sets it aside and re-derives records and "
            "edges from the archive")


class LanceTableLost(LanceTableUnreadable):
    """A table that existed (the warehouse recorded it) has no folder or bucket prefix any more."""

    def __init__(self, name: str, path: Path | str, first_seen: datetime | None = None,
                 archive: tuple[int, int] | None = None):
        """``archive``: ``(archived, read)``, how many of the session files the memory was built from the
        archive holds (`LanceTableLedger.archive_coverage`), said in the message when given."""
        self.table, self.path = name, path
        since = f" (it existed since {first_seen:%Y-%m-%d %H:%M} UTC)" if first_seen else ""
        if name in (RECORDS, EDGES):
            repair = f"to re-derive records and edges from the archive{held_by(archive)}"
        else:  # recall provenance and memory events are not in the archive
            repair = "to start it again, empty (what it held is not in the archive), and re-derive records and edges"
        RuntimeError.__init__(
            self, f"Lance table {name!r} at {path} is gone{since}; it is not recreated empty: run "
                  f"`sessionlake memory rebuild` {repair}")


def held_by(archive: tuple[int, int] | None) -> str:
    """``" (it holds all N session files the memory was built from)"``, or ``A of the N``, or "" when unknown."""
    if archive is None:
        return ""
    archived, read = archive
    held = f"all {read:,}" if archived >= read else f"{archived:,} of the {read:,}"
    return f" (it holds {held} session files the memory was built from)"
