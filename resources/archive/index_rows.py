"""What the pack index holds, as data: an object waiting for its pack, an archived version, one time an
ingest saw a version. The facade (`resources.archive.packs.PackStore`) and the index writer
(`resources.archive.pack_index`) both use them, so they live apart from either."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from resources.archive.pack_format import Snapshot


@dataclass(frozen=True)
class PendingObject:
    """A new object waiting for its pack: id, raw size and stored (compressed) size."""

    object_id: str
    size: int
    stored_size: int


@dataclass(frozen=True)
class ArchivedVersion:
    """A snapshot row: one archived version of one session file."""

    snapshot: Snapshot
    pack_key: str
    archived_at: datetime


@dataclass(frozen=True)
class Observation:
    """One time an ingest saw a version on disk: the version, with the mtime it had then."""

    snapshot: Snapshot
    observed_at: datetime
