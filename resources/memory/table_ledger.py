"""Which Lance tables have existed, kept in the warehouse (table ``lance_tables``), so a table whose
folder or bucket prefix has gone is reported as lost instead of being recreated empty.

Contract:
- One row per (location, table): the Lance root (a folder's absolute path, or ``s3://bucket/prefix/lance``)
  and the table name. `LanceStore` records a table when it creates it or first opens it, and forgets it
  only when ``sessionlake memory rebuild`` sets it aside or re-creates it.
- `lost_tables` tells which recorded tables are gone without importing lancedb or pyarrow: a stat per
  table on disk, one listing request per table in a bucket. Commands call it before anything else.
- A home written before the ledger existed records its tables the first time they are opened.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from resources.state.store import StateStore, fetch_one


class LanceTableLedger:
    """The recorded tables of one Lance ``location``, read from the warehouse once and cached."""

    def __init__(self, state: StateStore, location: str):
        self.state, self.location = state, location
        self._known: dict[str, datetime] | None = None

    def known(self) -> dict[str, datetime]:
        """``{table: first seen}`` for every table recorded at this location."""
        if self._known is None:
            with self.state.connect() as conn:
                rows = conn.execute("SELECT name, first_seen FROM lance_tables WHERE location = ?",
                                    [self.location]).fetchall()
            self._known = dict(rows)
        return self._known

    def record(self, name: str) -> None:
        if name in self.known():
            return
        now = datetime.now(UTC)
        with self.state.connect() as conn:
            conn.execute("INSERT INTO lance_tables VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [self.location, name, now])
            seen = fetch_one(conn, "SELECT first_seen FROM lance_tables WHERE location = ? AND name = ?",
                             [self.location, name])
        self.known()[name] = seen[0] if seen else now

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
    return LanceTableLedger(StateStore.from_settings(settings), ledger_location(settings)[0])


def lost_tables(settings) -> list:
    """A `LanceTableLost` for every table the ledger says existed whose folder (or prefix) is gone."""
    if not settings.state_path.exists():
        return []
    key, where = ledger_location(settings)
    known = ledger_for(settings).known()
    lost = []
    for name in sorted(known):
        if isinstance(where, Path):
            gone = not os.path.lexists(where / f"{name}.lance")
        else:
            gone = next(iter(where.blobs().list(f"{name}.lance/")), None) is None
        if gone:
            from resources.memory.schema import LanceTableLost

            lost.append(LanceTableLost(name, f"{key}/{name}.lance", known[name]))
    return lost


def lost_tables_line(settings) -> str | None:
    """One line naming every lost table and the repair, or None when none is lost."""
    lost = lost_tables(settings)
    if len(lost) <= 1:
        return str(lost[0]) if lost else None
    where = ledger_location(settings)[0]
    return (f"Lance tables {', '.join(e.table for e in lost)} under {where} are gone; they are not recreated "
            "empty: run `sessionlake memory rebuild` to re-derive records and edges from the archive")
