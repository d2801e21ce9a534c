"""Drain the capture inbox into the Lance ``records`` table: one commit per batch, id = ULID.

Contract: every envelope becomes one ``records`` row whose id is its ULID, so a drain that dies
between the Lance commit and the file deletion re-ingests the same ids and creates no duplicates.
The record's ``text`` is the row text; a record without usable text (a producer using the Python API
with other fields) is stored with its whole JSON as text rather than dropped. Known record fields
(tier, role, session_id, session_key, project, timestamp, model, git_branch, tags, language) fill the
matching columns; a missing or unreadable timestamp falls back to the envelope's ``appended_at``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from resources.capture.queue import DEFAULT_BATCH_SIZE, CaptureQueue, Envelope
from resources.memory.lance import LanceStore
from resources.memory.schema import new_record
from resources.times import as_utc

CAPTURE_TIER = "capture"
_TEXT_COLUMNS = ("role", "session_id", "session_key", "project", "model", "git_branch", "language")


@dataclass
class DrainStats:
    """What one drain did."""

    records: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def records_per_sec(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def _text_or_none(value) -> str | None:
    return None if value is None or value == "" else str(value)


def _timestamp(record: dict, envelope: Envelope):
    try:
        return as_utc(record.get("timestamp")) or as_utc(envelope.appended_at)
    except (TypeError, ValueError):
        return as_utc(envelope.appended_at)


def envelope_row(envelope: Envelope) -> dict:
    """The ``records`` row for one envelope (see the module docstring)."""
    record = envelope.record
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        text = json.dumps(record, ensure_ascii=False, sort_keys=True)
    tags = record.get("tags")
    return new_record(
        envelope.ulid, text,
        tier=_text_or_none(record.get("tier")) or CAPTURE_TIER,
        timestamp=_timestamp(record, envelope),
        tags=[str(t) for t in tags] if isinstance(tags, list) else (),
        **{column: _text_or_none(record.get(column)) for column in _TEXT_COLUMNS},
    )


def drain_to_lance(queue: CaptureQueue, store: LanceStore, batch_size: int = DEFAULT_BATCH_SIZE) -> DrainStats:
    """Move pending envelopes into ``records``, oldest first, one ``upsert_records`` commit per batch.

    Errors from the queue (`CaptureQueueSchemaError` after the rest was drained) and from Lance
    propagate; whatever was committed before stays committed and its files are gone.
    """
    stats = DrainStats()
    started = time.perf_counter()

    def write(batch: list[Envelope]) -> None:
        store.upsert_records([envelope_row(e) for e in batch])
        stats.batches += 1
        stats.records += len(batch)

    try:
        queue.ingest_batches(write, batch_size=batch_size)
    finally:
        stats.seconds = time.perf_counter() - started
    return stats
