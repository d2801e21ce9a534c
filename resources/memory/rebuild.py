"""Re-derive the Lance memory (``records``, ``edges``) from the archive.

Memory is derived data and the archive holds every byte of every version of every session file, so
a table lost to a missing or unreadable ``_versions/`` can be rebuilt. `rebuild_memory`:

1. sets aside every Lance table whose folder exists but cannot be opened (moved to
   ``lance/broken/``, never deleted; in a bucket, copied there and then deleted), and lets a table
   that is gone (`LanceTableLost`) be created again; a readable table is kept and merged into, so its
   provenance and captured records survive;
2. runs the memory processor, through the runner (`resources.ingest.batch.Batch`: a version it fails
   on is reported and the others are used; a failed commit is split down to the version), over every
   observation of every archived session file in the order the archive saw them, across projects (so
   what an ingest saw last wins here too, for a record that several files hold), each version written
   to a temp file only while it is read;
3. for a source that reads a file together with its tree (`Source.reads_tree`: OpenCode), restores
   the project's latest files into a temp tree and reads each there, as an ingest reads them on disk;
4. commits once, like an ingest run: one ``merge_insert`` per table.

Processor state is left alone: it says every archived file is in memory, which is true again.
What only ever lived in a set-aside ``records`` table (captured records, provenance) cannot be
re-derived; the report names where the old folder is.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from resources.archive.pack_format import Snapshot
from resources.archive.packs import ObjectReader, PackStore
from resources.archive.restore import write_version
from resources.ingest.batch import Batch
from resources.ingest.files_to_read import ArchivedFile
from resources.ingest.processors.memory import MemoryProcessor
from resources.ingest.run_stats import empty_stats
from resources.ingest.session_files import SessionFile
from resources.memory.lance import LanceStore
from resources.memory.schema import TABLE_NAMES, LanceTableLost
from resources.sources import source_type

NO_STATE = None
"""The memory processor keeps no DuckDB state (it never touches the connection it is handed), so the
rebuild holds no connection to the warehouse while it reads the whole archive, and marks nothing."""


def rebuild_memory(lance: LanceStore, packs: PackStore) -> dict:
    """Set aside unreadable tables, re-derive records and edges from every archived version, commit once.

    Returns ``{set_aside: {table: path}, recreated: [lost table], projects, versions, records_written, edges_written,
    lines_malformed, errors: [{project, session_key, error}]}``; a version that fails is reported
    (at most `resources.ingest.run_stats.MAX_ERRORS_REPORTED` per project) and the others are still used.
    """
    broken = lance.unreadable_tables(TABLE_NAMES)
    lost = sorted(name for name, exc in broken.items() if isinstance(exc, LanceTableLost))
    set_aside = {name: str(lance.set_aside(name)) for name in broken if name not in lost}
    for name in lost:
        lance.forget(name)
    processor = MemoryProcessor(lance)
    processor.begin_run()
    stats = empty_stats()
    batch = Batch(processor, stats, mark=False)
    timeline = sorted(((repo, o) for repo in packs.repos() for o in packs.timeline(repo)),
                      key=lambda item: (item[1].observed_at, item[1].snapshot.session_key))
    trees = sorted({repo for repo, o in timeline if source_type(o.snapshot.session_key).reads_tree})
    alone = [(repo, o.snapshot) for repo, o in timeline if repo not in trees]
    restore_errors = []
    with tempfile.TemporaryDirectory(prefix=".memory-rebuild-", dir=packs.packs_dir.parent) as scratch, \
            _Exported(packs, Path(scratch), alone) as exported:
        for repo, snap in alone:
            batch.read(NO_STATE, ArchivedFile(snap, repo, functools.partial(exported.written, repo)), snap.file_hash)
        for repo in trees:
            for file in packs.restore(repo, Path(scratch) / "tree" / repo):
                if file["status"] == "restored":
                    restored = SessionFile(file["session_key"], file["path"], repo, file["size"], 0)
                    batch.read(NO_STATE, restored, file["file_hash"])
                else:  # a fresh temp folder: only a symlinked or clashing key can end here
                    restore_errors.append({"project": repo, "session_key": file["session_key"],
                                           "error": f"not restored: {file['status']} {file.get('reason', '')}"})
        batch.commit(NO_STATE)
    totals = processor.end_run()
    return {"set_aside": set_aside, "recreated": lost, "projects": len({repo for repo, _ in timeline}),
            "versions": stats["processed"],
            "lines_malformed": stats["lines_malformed"], "records_written": totals["records_written"],
            "edges_written": totals["edges_written"],
            "errors": [{"project": project, "session_key": e["file"], "error": e["error"]}
                       for project, per in stats["by_project"].items() for e in per["error_files"]] + restore_errors}


class _Exported:
    """Archived versions written one at a time under ``folder``, each only while it is read; one reader
    per project, kept open for the whole rebuild, so each pack is verified once."""

    def __init__(self, packs: PackStore, folder: Path, versions: list[tuple[str, Snapshot]]):
        self.packs, self.folder = packs, folder
        self.chunks: dict[str, set[str]] = {}
        for repo, snap in versions:
            self.chunks.setdefault(repo, set()).update(snap.chunks)
        self.readers: dict[str, ObjectReader] = {}
        self.stack = contextlib.ExitStack()

    def __enter__(self) -> _Exported:
        self.fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        self.stack.callback(os.close, self.fd)
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    @contextlib.contextmanager
    def written(self, repo: str, snap: Snapshot, start_offset: int = 0) -> Iterator[Path]:
        """``snap`` of ``repo`` whole (a rebuild reads every version from its start), while the ``with`` lasts."""
        if repo not in self.readers:
            self.readers[repo] = self.stack.enter_context(self.packs.reader(repo))
            self.readers[repo].locate(self.chunks[repo])  # one index read for the project's versions
        # the original's suffix: an adapter tells a Gemini .json or an OpenCode .db by it
        name = f"version{Path(snap.session_key).suffix}"
        write_version(self.readers[repo], snap, self.fd, name)
        try:
            yield self.folder / name
        finally:
            (self.folder / name).unlink(missing_ok=True)
