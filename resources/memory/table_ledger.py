"""Which Lance tables have existed, kept in the warehouse (table ``lance_tables``), so a table whose
folder or bucket prefix has gone is reported as lost instead of being recreated empty.

Contract:
- One row per (location, table): the Lance root (a folder's absolute path, or ``s3://bucket/prefix/lance``)
  and the table name. `LanceStore` records a table when it creates it, writes it or opens it through
  LanceDB, and forgets it only when ``sessionlake memory rebuild`` sets it aside or re-creates it.
- `lost_tables` tells which recorded tables are gone without importing lancedb or pyarrow: a stat per
  table on disk, one listing request per table in a bucket. Commands call it before anything else.
  Only `LanceStore` records tables, and only the four of ``resources.memory.schema.TABLE_NAMES``, so
  when all four are there nothing can be lost and the warehouse is not read: the common case costs
  four stats and no DuckDB (recall in a fresh process never imports duckdb).
- A home written before the ledger existed records its tables the first time they are written or
  opened through LanceDB (`LanceStore.for_write`, `LanceStore.open_table`: every ingest that writes
  the memory, ``maintain``, the health sensor); recall's reads (`LanceStore.dataset`) do not.
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resources.state.store import StateStore


class LanceTableLedger:
    """The recorded tables of one Lance ``location``, read from the warehouse once and cached.

    ``state`` is the warehouse (a `StateStore`), or its file's path: then duckdb is imported and the
    store made (waiting up to ``lock_wait_sec`` for a warehouse another process holds, or the store's
    default) only when the ledger is first read or written."""

    def __init__(self, state: StateStore | Path, location: str, lock_wait_sec: float | None = None):
        self._state, self.location = state, location
        self._lock_wait_sec = lock_wait_sec
        self._known: dict[str, datetime] | None = None

    @functools.cached_property
    def state(self) -> StateStore:
        from resources.state.store import StateStore

        if isinstance(self._state, StateStore):
            return self._state
        wait = {} if self._lock_wait_sec is None else {"lock_wait_sec": self._lock_wait_sec}
        return StateStore(self._state, **wait)

    def known(self) -> dict[str, datetime]:
        """``{table: first seen}`` for every table recorded at this location."""
        if self._known is None:
            with self.state.connect() as conn:
                rows = conn.execute("SELECT name, first_seen FROM lance_tables WHERE location = ?",
                                    [self.location]).fetchall()
            self._known = dict(rows)
        return self._known

    def record(self, *names: str) -> None:
        """Record the tables ``names`` that are not recorded yet, in one connection."""
        known = self.known()
        missing = [name for name in dict.fromkeys(names) if name not in known]
        if not missing:
            return
        now = datetime.now(UTC)
        with self.state.connect() as conn:
            conn.executemany("INSERT INTO lance_tables VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                             [[self.location, name, now] for name in missing])
            seen = dict(conn.execute("SELECT name, first_seen FROM lance_tables WHERE location = ? AND "
                                     "name IN (SELECT unnest(?))", [self.location, missing]).fetchall())
        known.update((name, seen.get(name, now)) for name in missing)

    def archive_coverage(self) -> tuple[int, int]:
        """``(archived, read)``: of the session files the memory processor has read, how many the archive
        holds (both from the warehouse's processor state), so a lost table's message can say whether
        ``sessionlake memory rebuild`` re-derives all of them."""
        with self.state.connect() as conn:
            archived, read = conn.execute(
                """SELECT count(a.session_file), count(*) FROM session_processor_state m
                   LEFT JOIN session_processor_state a
                          ON a.processor_name = 'archive' AND a.session_file = m.session_file
                   WHERE m.processor_name = 'memory'""").fetchall()[0]
        return int(archived), int(read)

    def lost(self, name: str, uri: str):
        """The `LanceTableLost` of recorded table ``name`` at ``uri``; for a table the rebuild re-derives
        (records, edges), it says how much of the memory the archive holds."""
        from resources.memory.schema import LanceTableLost
        from resources.memory.table_names import EDGES, RECORDS

        coverage = self.archive_coverage() if name in (RECORDS, EDGES) else None
        return LanceTableLost(name, uri, self.known()[name], coverage)

    def forget(self, name: str) -> None:
        with self.state.connect() as conn:
            conn.execute("DELETE FROM lance_tables WHERE location = ? AND name = ?", [self.location, name])
        self.known().pop(name, None)


def ledger_location(settings) -> tuple[str, Path | object]:
    """``(key, where)``: the ledger key of the home's Lance root and the root itself (a folder or a
    `StorageLocation`), as `LanceStore.from_settings` opens it."""
    if settings.storage_uri:
        where = settings.storage.child("lance")
        return where.uri, where
    return str(Path(settings.lance_dir).absolute()), settings.lance_dir


def ledger_for(settings) -> LanceTableLedger:
    """The ledger of the home's Lance root; the warehouse is opened when the ledger is first used."""
    return LanceTableLedger(settings.state_path, ledger_location(settings)[0], settings.warehouse_lock_wait_sec)


def lost_tables(settings) -> list:
    """A `LanceTableLost` for every table the ledger says existed whose folder (or prefix) is gone."""
    from resources.memory.table_names import TABLE_NAMES

    if not settings.state_path.exists():
        return []
    key, where = ledger_location(settings)

    def gone(name: str) -> bool:
        if isinstance(where, Path):
            return not os.path.lexists(where / f"{name}.lance")
        return next(iter(where.blobs().list(f"{name}.lance/")), None) is None

    missing = {name for name in TABLE_NAMES if gone(name)}
    if not missing:  # every table the ledger can hold is there
        return []
    ledger = ledger_for(settings)
    # looked for again after the ledger is read: a table created (and recorded) meanwhile is not lost
    recorded = sorted(name for name in missing & set(ledger.known()) if gone(name))
    return [ledger.lost(name, f"{key}/{name}.lance") for name in recorded]


def lost_tables_line(settings) -> str | None:
    """One line naming every lost table and the repair, or None when none is lost."""
    lost = lost_tables(settings)
    if len(lost) <= 1:
        return str(lost[0]) if lost else None
    from resources.memory.schema import held_by
    from resources.memory.table_names import EDGES, RECORDS

    where = ledger_location(settings)
    coverage = ledger_for(settings).archive_coverage() if {e.table for e in lost} & {RECORDS, EDGES} else None
    return (f"Lance tables {', '.join(e.table for e in lost)} under {where[0]} are gone; they are not recreated "
            f"empty: run `sessionlake memory rebuild` to re-derive records and edges from the archive"
            f"{held_by(coverage)}")
