"""Move provenance out of the old JSON ``records.provenance`` column into the append-only table.

Contract of `migrate_provenance_column(store)`: on a ``records`` table that still has the column,
every entry of every record goes to ``provenance`` (ids ``MIGRATED_ID_PREFIX<record_id>-<n>``, so the
old entries keep their order and come before any entry appended later). The migrated rows are then
counted; only when the count equals the number of entries read is the column dropped, else
`ProvenanceMigrationError` is raised and the column stays. A cell that is not a JSON list of objects
is kept as one entry ``{"unparsed": <the cell>}`` (logged), never dropped. Re-running is safe:
migrated rows left by an interrupted run are deleted first. An flock on ``<lance root>/.provenance-
migration.lock`` keeps two processes from migrating at once. Returns the number of entries moved
(0 when there is no column). Processes still running the old code must be stopped first: an entry
they append to the column after it was read is lost with the column.
"""

from __future__ import annotations

import fcntl
import logging
import os

import orjson
import pyarrow as pa

from resources.memory.provenance import provenance_row
from resources.memory.schema import PROVENANCE, PROVENANCE_SCHEMA, RECORDS, sql_str

LEGACY_PROVENANCE_COLUMN = "provenance"
MIGRATED_ID_PREFIX = "0" * 26 + "-"
"""Ids of migrated entries: they sort before every ULID, so they stay first per record."""
LOCK_NAME = ".provenance-migration.lock"
log = logging.getLogger(__name__)


class ProvenanceMigrationError(RuntimeError):
    """The migrated entries did not add up; the old column was left in place."""


def _has_column(store) -> bool:
    return LEGACY_PROVENANCE_COLUMN in store.dataset(RECORDS).schema.names


def _entries(record_id: str, cell: str) -> list[dict]:
    try:
        entries = orjson.loads(cell)
        if isinstance(entries, list) and all(isinstance(e, dict) for e in entries):
            return entries
    except orjson.JSONDecodeError:
        pass
    log.warning("record %s: provenance cell is not a JSON list of objects; kept as one 'unparsed' entry", record_id)
    return [{"unparsed": cell}]


def migrate_provenance_column(store) -> int:
    """See the module docstring."""
    if not _has_column(store):
        return 0
    fd = os.open(store.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not _has_column(store):  # another process finished it while we waited
            return 0
        return _migrate(store)
    finally:
        os.close(fd)


def _migrate(store) -> int:
    records = store.open_table(RECORDS)
    column = LEGACY_PROVENANCE_COLUMN
    cells = (records.search().where(f"{column} IS NOT NULL AND {column} != '[]'")
             .select(["id", column]).limit(None).to_arrow())
    rows = []
    for record_id, cell in zip(cells["id"].to_pylist(), cells[column].to_pylist(), strict=True):
        for n, entry in enumerate(_entries(record_id, cell)):
            rows.append(provenance_row(f"{MIGRATED_ID_PREFIX}{record_id}-{n:08d}", record_id, entry))
    table = store.open_table(PROVENANCE)
    migrated = f"id LIKE {sql_str(MIGRATED_ID_PREFIX + '%')}"
    if table.count_rows(migrated):
        table.delete(migrated)  # left by an interrupted migration
    if rows:
        table.add(pa.Table.from_pylist(rows, schema=PROVENANCE_SCHEMA))
    found = store.open_table(PROVENANCE).count_rows(migrated)
    if found != len(rows):
        raise ProvenanceMigrationError(
            f"moved {len(rows)} provenance entries of {cells.num_rows} records but the provenance table "
            f"holds {found}; the records.{column} column was kept, nothing is lost")
    records.drop_columns([column])
    log.info("moved %d provenance entries of %d records to the %s table and dropped records.%s",
             len(rows), cells.num_rows, PROVENANCE, column)
    return len(rows)
