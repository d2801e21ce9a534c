"""Re-derive the Lance memory (``records``, ``edges``) from the archive.

Memory is derived data and the archive holds every byte of every version of every session file, so
a table lost to a missing or unreadable ``_versions/`` can be rebuilt. `rebuild_memory`:

1. sets aside every Lance table whose folder exists but cannot be opened (moved to
   ``lance/broken/``, never deleted); a readable table is kept and merged into, so its provenance and
   captured records survive;
2. runs the memory processor over every observation of every archived session file, project by
   project, in the order the archive saw them (so the content seen last wins, as in the ingest), each
   version written to a temp file that is deleted after it;
3. commits once, like an ingest run: one ``merge_insert`` per table.

Processor state is left alone: it says every archived file is in memory, which is true again.
What only ever lived in a set-aside ``records`` table (captured records, provenance) cannot be
re-derived; the report names where the old folder is.
"""

from __future__ import annotations

import tempfile

from pipelines.processors.memory import MemoryProcessor
from resources.lance import TABLE_NAMES, LanceStore
from resources.pack_format import PackError
from resources.packs import PackStore
from resources.state import StateStore


def rebuild_memory(lance: LanceStore, packs: PackStore, state: StateStore) -> dict:
    """Set aside unreadable tables, re-derive records and edges from every archived version, commit once.

    Returns ``{set_aside: {table: path}, projects, versions, records_written, edges_written,
    lines_malformed, errors: [{project, session_key, error}]}``; a version that fails is reported
    and the others are still used.
    """
    set_aside = {name: str(lance.set_aside(name)) for name in lance.unreadable_tables(TABLE_NAMES)}
    processor = MemoryProcessor(lance)
    processor.begin_run()
    report = {"set_aside": set_aside, "projects": 0, "versions": 0, "lines_malformed": 0, "errors": []}
    with tempfile.TemporaryDirectory(prefix=".memory-rebuild-", dir=packs.packs_dir.parent) as scratch:
        for repo in packs.repos():
            report["projects"] += 1
            versions = [o.snapshot for o in packs.timeline(repo)]
            try:
                for snap, path in packs.export_versions(repo, versions, scratch):
                    try:
                        with state.connect() as conn:
                            result = processor.process_session(path, repo, snap.session_key, conn)
                    except Exception as exc:  # one bad version never stops the rebuild
                        report["errors"].append({"project": repo, "session_key": snap.session_key,
                                                 "error": f"{type(exc).__name__}: {exc}"})
                        continue
                    report["versions"] += 1
                    report["lines_malformed"] += len(result.malformed)
            except PackError as exc:
                report["errors"].append({"project": repo, "session_key": None, "error": f"{type(exc).__name__}: {exc}"})
    with state.connect() as conn:
        processor.commit(conn)
    stats = processor.end_run()
    report["records_written"] = stats["records_written"]
    report["edges_written"] = stats["edges_written"]
    return report
