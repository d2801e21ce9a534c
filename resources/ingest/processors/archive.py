"""The archive processor: every new or changed session file becomes a snapshot in one pack per project.

A new file is stored whole. A file that grew, whose first ``previous size`` bytes still hash to the
previously archived version, stores only its new tail (its snapshot reuses the earlier chunks).
Anything else was rewritten and is stored whole again. This check hashes the whole stored prefix, so
it does not depend on the runner's ``start_offset`` (a 4 KiB fingerprint); the bytes kept are always
the file's complete history, byte for byte.

Compressed chunks wait in a spool file next to the packs (bounded memory), and ``commit`` writes one
pack per project from it. A file that fails contributes nothing: its chunks stay unreferenced in the
spool, which is deleted at the end of the run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from resources.archive.index_rows import PendingObject
from resources.archive.pack_format import (
    TEMP_SUFFIX,
    ObjectEntry,
    ObjectRef,
    Snapshot,
    compress,
    iter_chunks,
    key_hex,
    object_id,
)
from resources.archive.packs import PackStore
from resources.ingest.contract import ProcessorResult, SessionProcessor
from resources.state.store import Connection

_HASH_BLOCK = 1 << 20


@dataclass
class _RepoBatch:
    objects: dict[str, PendingObject] = field(default_factory=dict)
    snapshots: list[Snapshot] = field(default_factory=list)


class _Spool:
    """An append-only temp file of compressed chunks, read back by position when the pack is written."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".spool-", suffix=TEMP_SUFFIX, dir=directory)
        self.path = Path(name)
        self._f = os.fdopen(fd, "w+b")
        self.entries: dict[str, ObjectEntry] = {}

    def add(self, chunk: bytes, oid: str | None = None) -> PendingObject:
        """Spool ``chunk`` (``oid``: its `object_id` when the caller has hashed it already)."""
        oid = oid or object_id(chunk)
        if oid not in self.entries:
            codec, content = compress(chunk)
            self._f.seek(0, os.SEEK_END)
            self.entries[oid] = ObjectEntry(oid, codec, len(chunk), len(content), self._f.tell())
            self._f.write(content)
        e = self.entries[oid]
        return PendingObject(oid, e.size, e.stored_size)

    def ref(self, oid: str) -> ObjectRef:
        self._f.flush()
        return ObjectRef(self.entries[oid], self._f)

    def close(self) -> None:
        self._f.close()
        self.path.unlink(missing_ok=True)


class ArchiveProcessor(SessionProcessor):
    """Archive every version of every session file into content-addressed packs (see module doc)."""

    name = "archive"
    commit_every_files = None
    runs_beside = True

    def __init__(self, store: PackStore):
        self.store = store
        self._spool: _Spool | None = None
        self._batch: dict[str, _RepoBatch] = {}
        self._latest: dict[str, dict[str, Snapshot]] = {}
        self._observed: set[str] | None = None
        self._stats = self._zero_stats()

    @staticmethod
    def _zero_stats() -> dict:
        return {"packs_written": 0, "objects_written": 0, "pack_bytes_written": 0, "versions_archived": 0}

    def begin_run(self) -> None:
        self._close_spool()
        self._spool = _Spool(self.store.packs_dir)
        self._batch = {}
        self._latest = {}
        self._observed = None
        self._stats = self._zero_stats()

    def process_session(
        self,
        session_path: Path,
        project: str,
        session_key: str,
        conn: Connection,
        *,
        start_offset: int = 0,
    ) -> ProcessorResult:
        if self._spool is None:
            self.begin_run()
        repo = project  # for Claude Code, the first part of the key (`repo_of`)
        if self._observed is None:  # one query per run: a project with nothing archived needs no timeline
            self._observed = PackStore.observed_repos(conn)
        if repo not in self._latest:  # one query per project and run, not one per file
            self._latest[repo] = PackStore.latest_snapshots(conn, repo) if repo in self._observed else {}
        previous = self._latest[repo].get(session_key)
        with open(session_path, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size  # bytes appended while we read belong to the next version
            digest, base = hashlib.sha256(), ()
            if previous is not None and previous.size <= size:
                _hash_exactly(f, digest, previous.size)
                if digest.hexdigest() == previous.file_hash:
                    base = previous.chunks
                else:
                    f.seek(0)
                    digest = hashlib.sha256()
            new: list[PendingObject] = []
            file_hash, start = None, f.tell()
            for chunk in iter_chunks(f, size - start):
                if start == 0 and len(chunk) == size:  # the file is this one chunk: its hash is the chunk's
                    new.append(self._spool.add(chunk, oid := object_id(chunk)))
                    file_hash = key_hex(oid)
                else:
                    digest.update(chunk)
                    new.append(self._spool.add(chunk))
        snapshot = Snapshot(session_key, size, file_hash or digest.hexdigest(), st.st_mtime_ns,
                            tuple(base) + tuple(o.object_id for o in new))
        batch = self._batch.setdefault(repo, _RepoBatch())
        batch.objects.update((o.object_id, o) for o in new)
        batch.snapshots.append(snapshot)
        return ProcessorResult(items_count=1, end_offset=size, bytes_read=size)

    def commit(self, conn: Connection) -> None:
        """Write one pack per project holding what this batch added, registered in one transaction, then
        forget the batch."""
        if self._batch:
            batches = {repo: (list(b.objects.values()), b.snapshots) for repo, b in self._batch.items()}
            for written in self.store.add_packs(conn, batches, self._spool.ref).values():
                self._stats["packs_written"] += 1
                self._stats["objects_written"] += written["object_count"]
                self._stats["pack_bytes_written"] += written["bytes"]
                self._stats["versions_archived"] += written["snapshot_count"]
        self.discard()

    def discard(self) -> None:
        """Forget the batch; its chunks stay unreferenced in the spool until the run ends."""
        self._batch = {}
        self._latest = {}
        self._observed = None

    def end_run(self) -> dict:
        self._close_spool()
        return dict(self._stats)

    def _close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def _hash_exactly(f, digest, length: int) -> None:
    while length > 0:
        data = f.read(min(_HASH_BLOCK, length))
        if not data:
            break
        digest.update(data)
        length -= len(data)
