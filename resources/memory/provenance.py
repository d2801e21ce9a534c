"""Provenance: which recalls returned each record, an append-only log in the ``provenance`` table.

Contract (`ProvenanceLog`, which a `LanceStore` holds and its provenance methods call):
- One row per entry (``record_id``, ``ts``, ``cue``, ``session_id`` and the whole entry as JSON, see
  `provenance_row`), never a rewrite of ``records``.
- ``append`` adds any number of entries to any number of records in one commit; ``entries_of``
  lists a record's entries in the order they were made (entry ids are ULIDs, monotonic within a
  process), which is what ``store.get(id)["provenance"]`` holds. A retried append passes the entries'
  ids again and appends none twice.
- ``record`` routes through the write-behind queue (`ProvenanceWriteQueue`) while it is enabled
  (``enable_queue``), else writes on the caller's thread. Every write goes through the store's
  ``append_provenance_batch``, the one write path (the queue calls it too).
- A store written before the provenance table existed (a JSON ``provenance`` column on ``records``)
  is migrated when a `LanceStore` is opened on it, see `migrate_provenance_column`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa

from resources.ids import new_ulid
from resources.memory.provenance_queue import ProvenanceWriteQueue
from resources.memory.schema import ID_LOOKUP_CHUNK, PROVENANCE, PROVENANCE_SCHEMA, RECORDS, sql_str
from resources.times import as_utc

if TYPE_CHECKING:
    from resources.memory.lance import LanceStore


class ProvenanceLog:
    """The provenance of ``store``'s records, and the write-behind queue in front of it."""

    def __init__(self, store: LanceStore) -> None:
        self.store = store
        self.queue: ProvenanceWriteQueue | None = None
        self._queue_lock = threading.Lock()

    def entries_of(self, record_ids: Sequence[str]) -> dict[str, list[dict]]:
        """``{record_id: [entry, ...]}`` in append order, for the ids that have any entries."""
        out: dict[str, list[dict]] = {}
        ids = list(dict.fromkeys(record_ids))
        if not ids:
            return out
        table = self.store.open_table(PROVENANCE)
        rows: list[tuple[str, str, str]] = []
        for start in range(0, len(ids), ID_LOOKUP_CHUNK):
            chunk = ids[start : start + ID_LOOKUP_CHUNK]
            where = "record_id IN (" + ",".join(sql_str(i) for i in chunk) + ")"
            found = table.search().where(where).select(["id", "record_id", "entry"]).limit(None).to_arrow()
            rows += zip(found["id"].to_pylist(), found["record_id"].to_pylist(), found["entry"].to_pylist(),
                        strict=True)
        for _, rid, entry in sorted(rows):
            out.setdefault(rid, []).append(orjson.loads(entry))
        return out

    def append(self, pairs: Sequence[tuple[str, dict]], entry_ids: Sequence[str] | None = None,
               *, retried: bool = False) -> int:
        """Append each ``(record_id, entry)`` as a row of ``provenance``, in order, in ONE commit.

        Ids that are not in ``records`` are ignored. Returns the number of distinct records that got
        entries. An append never touches ``records`` and never conflicts with another process's append
        (Lance rebases concurrent appends), so no entry is lost to a concurrent writer.

        ``entry_ids`` (one per pair) are the entries' own ids, made once when each entry was made (a
        ULID: a record's entries are listed in id order); without them each row gets a new one. A call
        that raised may still have committed, so a caller that repeats it passes the same ids with
        ``retried``: entries whose id is already in the table are skipped and none lands twice. Only
        a retry pays for that check (a scan of the table's ids).
        """
        if not pairs:
            return 0
        if entry_ids is None:
            entry_ids = [new_ulid() for _ in pairs]
        elif len(entry_ids) != len(pairs):
            raise ValueError(f"{len(entry_ids)} entry ids for {len(pairs)} pairs")
        store = self.store
        known = set(store.rows_by_id(store.dataset(RECORDS), list(dict.fromkeys(r for r, _ in pairs)), ["id"]))
        rows = [provenance_row(eid, rid, entry) for eid, (rid, entry) in zip(entry_ids, pairs, strict=True)
                if rid in known]
        if not rows:
            return 0
        table = store.dataset(PROVENANCE)  # pylance, not LanceDB: a recall in a fresh process never imports lancedb
        if retried:
            landed = set(store.rows_by_id(table, [row["id"] for row in rows], ["id"]))
            rows = [row for row in rows if row["id"] not in landed]
        if not rows:
            return 0
        table.insert(pa.Table.from_pylist(rows, schema=PROVENANCE_SCHEMA))
        return len({row["record_id"] for row in rows})

    def record(self, pairs: Sequence[tuple[str, dict]]) -> None:
        """Queue the pairs when the write-behind queue is on, else append them now on this thread."""
        queue = self.queue
        if queue is not None:
            queue.enqueue(pairs)
        else:
            self.store.append_provenance_batch(pairs)

    def enable_queue(self, **options) -> ProvenanceWriteQueue:
        """Start (once) a `ProvenanceWriteQueue` that `record` goes through; returns it.

        ``options`` are the queue's (``coalesce_ms``, bounds, ...); the overflow folder defaults to the
        store's ``provenance_overflow_dir``.
        """
        with self._queue_lock:
            if self.queue is None:
                options.setdefault("overflow_dir", self.store.provenance_overflow_dir)
                queue = ProvenanceWriteQueue(self.store, **options)
                queue.start()
                self.queue = queue
            return self.queue

    def disable_queue(self, timeout: float | None = None) -> None:
        """Stop the queue after draining it; provenance is written synchronously again."""
        with self._queue_lock:
            queue, self.queue = self.queue, None
        if queue is not None:
            queue.stop(timeout)


def provenance_row(entry_id: str, record_id: str, entry: dict) -> dict:
    """A ``provenance`` row: the entry's ``ts``/``cue``/``session_id`` as columns, the whole entry as JSON."""
    try:
        ts = as_utc(entry.get("ts"))
    except (AttributeError, TypeError, ValueError):
        ts = None
    cue, session_id = entry.get("cue"), entry.get("session_id")
    return {"id": entry_id, "record_id": record_id, "ts": ts,
            "cue": None if cue is None else str(cue), "session_id": None if session_id is None else str(session_id),
            "entry": orjson.dumps(entry, default=str).decode()}
