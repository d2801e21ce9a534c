"""Re-derive the Lance memory (``records``, ``edges``) from the archive.

Memory is derived data and the archive holds every byte of every version of every session file, so
a table lost to a missing or unreadable ``_versions/`` can be rebuilt. `rebuild_memory`:

1. sets aside every Lance table whose folder exists but cannot be opened (moved to
   ``lance/broken/``, never deleted); a readable table is kept and merged into, so its provenance and
   captured records survive. In a bucket (``SESSIONLAKE_STORAGE_URI``) a table cannot be set aside:
   `RebuildRefused` says which one to move by hand, and nothing is set aside or written;
2. runs the memory processor over every observation of every archived session file in the order the
   archive saw them, across projects (so what an ingest saw last wins here too, for a record that
   several files hold), each version written to a temp file that is deleted after it;
3. commits once, like an ingest run: one ``merge_insert`` per table.

Processor state is left alone: it says every archived file is in memory, which is true again.
What only ever lived in a set-aside ``records`` table (captured records, provenance) cannot be
re-derived; the report names where the old folder is.
"""

from __future__ import annotations

import tempfile

from pipelines.processors.memory import MemoryProcessor
from resources.archive.pack_format import PackError
from resources.archive.packs import PackStore
from resources.memory.lance import TABLE_NAMES, LanceStore


class RebuildRefused(RuntimeError):
    """The rebuild cannot start (a broken table it cannot set aside); nothing was set aside or written."""


NO_STATE = None
"""The memory processor keeps no DuckDB state (it never touches the connection it is handed), so the
rebuild holds no connection to the warehouse while it reads the whole archive."""


def rebuild_memory(lance: LanceStore, packs: PackStore) -> dict:
    """Set aside unreadable tables, re-derive records and edges from every archived version, commit once.

    Returns ``{set_aside: {table: path}, projects, versions, records_written, edges_written,
    lines_malformed, errors: [{project, session_key, error}]}``; a version that fails is reported
    and the others are still used.
    """
    set_aside = {}
    for name in lance.unreadable_tables(TABLE_NAMES):
        try:
            set_aside[name] = str(lance.set_aside(name))
        except NotImplementedError as exc:  # a table in a bucket: LanceStore.set_aside moves local folders only
            raise RebuildRefused(f"Lance table {name!r} cannot be opened, and {exc}; it was left as it is") from None
    processor = MemoryProcessor(lance)
    processor.begin_run()
    report = {"set_aside": set_aside, "versions": 0, "lines_malformed": 0, "errors": []}
    timeline = sorted(((repo, o) for repo in packs.repos() for o in packs.timeline(repo)),
                      key=lambda item: (item[1].observed_at, item[1].snapshot.session_key))
    report["projects"] = len({repo for repo, _ in timeline})
    with tempfile.TemporaryDirectory(prefix=".memory-rebuild-", dir=packs.packs_dir.parent) as scratch:
        try:
            for repo, snap, path in packs.export_versions([(r, o.snapshot) for r, o in timeline], scratch):
                try:
                    result = processor.process_session(path, repo, snap.session_key, NO_STATE)
                except Exception as exc:  # one bad version never stops the rebuild
                    report["errors"].append({"project": repo, "session_key": snap.session_key,
                                             "error": f"{type(exc).__name__}: {exc}"})
                    continue
                report["versions"] += 1
                report["lines_malformed"] += len(result.malformed)
        except PackError as exc:  # the archive itself is damaged: what was read so far is still written
            report["errors"].append({"project": None, "session_key": None, "error": f"{type(exc).__name__}: {exc}"})
    processor.commit(NO_STATE)
    stats = processor.end_run()
    report["records_written"] = stats["records_written"]
    report["edges_written"] = stats["edges_written"]
    return report
