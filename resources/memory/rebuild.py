"""Re-derive the Lance memory (``records``, ``edges``) from the archive.

Memory is derived data and the archive holds every byte of every version of every session file, so
a table lost to a missing or unreadable ``_versions/`` can be rebuilt. `rebuild_memory`:

1. sets aside every Lance table whose folder exists but cannot be opened (moved to
   ``lance/broken/``, never deleted; in a bucket, copied there and then deleted); a readable table is
   kept and merged into, so its provenance and captured records survive;
2. runs the memory processor over every observation of every archived session file in the order the
   archive saw them, across projects (so what an ingest saw last wins here too, for a record that
   several files hold), each version written to a temp file that is deleted after it;
3. for a source that reads a file together with its tree (`Source.reads_tree`: OpenCode), restores
   the project's latest files into a temp tree and reads each there, as an ingest reads them on disk;
4. commits once, like an ingest run: one ``merge_insert`` per table.

Processor state is left alone: it says every archived file is in memory, which is true again.
What only ever lived in a set-aside ``records`` table (captured records, provenance) cannot be
re-derived; the report names where the old folder is.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from resources.archive.pack_format import PackError
from resources.archive.packs import PackStore
from resources.ingest.processors.memory import MemoryProcessor
from resources.memory.lance import TABLE_NAMES, LanceStore
from resources.sources import source_type

NO_STATE = None
"""The memory processor keeps no DuckDB state (it never touches the connection it is handed), so the
rebuild holds no connection to the warehouse while it reads the whole archive."""


def rebuild_memory(lance: LanceStore, packs: PackStore) -> dict:
    """Set aside unreadable tables, re-derive records and edges from every archived version, commit once.

    Returns ``{set_aside: {table: path}, projects, versions, records_written, edges_written,
    lines_malformed, errors: [{project, session_key, error}]}``; a version that fails is reported
    and the others are still used.
    """
    set_aside = {name: str(lance.set_aside(name)) for name in lance.unreadable_tables(TABLE_NAMES)}
    processor = MemoryProcessor(lance)
    processor.begin_run()
    report = {"set_aside": set_aside, "versions": 0, "lines_malformed": 0, "errors": []}
    timeline = sorted(((repo, o) for repo in packs.repos() for o in packs.timeline(repo)),
                      key=lambda item: (item[1].observed_at, item[1].snapshot.session_key))
    report["projects"] = len({repo for repo, _ in timeline})
    trees = sorted({repo for repo, o in timeline if source_type(o.snapshot.session_key).reads_tree})
    alone = [(repo, o.snapshot) for repo, o in timeline if repo not in trees]
    with tempfile.TemporaryDirectory(prefix=".memory-rebuild-", dir=packs.packs_dir.parent) as scratch:
        try:
            for repo, snap, path in packs.export_versions(alone, scratch):
                _read(processor, path, repo, snap.session_key, report)
            for repo in trees:
                tree = Path(scratch) / "tree" / repo
                for file in packs.restore(repo, tree):
                    if file["status"] == "restored":
                        _read(processor, Path(file["path"]), repo, file["session_key"], report)
                    else:  # a fresh temp folder: only a symlinked or clashing key can end here
                        report["errors"].append({"project": repo, "session_key": file["session_key"],
                                                 "error": f"not restored: {file['status']} {file.get('reason', '')}"})
                shutil.rmtree(tree)
        except PackError as exc:  # the archive itself is damaged: what was read so far is still written
            report["errors"].append({"project": None, "session_key": None, "error": f"{type(exc).__name__}: {exc}"})
    processor.commit(NO_STATE)
    stats = processor.end_run()
    report["records_written"] = stats["records_written"]
    report["edges_written"] = stats["edges_written"]
    return report


def _read(processor: MemoryProcessor, path: Path, repo: str, session_key: str, report: dict) -> None:
    """One archived version through the processor; a failure is reported, and never stops the rebuild."""
    try:
        result = processor.process_session(path, repo, session_key, NO_STATE)
    except Exception as exc:
        report["errors"].append({"project": repo, "session_key": session_key, "error": f"{type(exc).__name__}: {exc}"})
        return
    report["versions"] += 1
    report["lines_malformed"] += len(result.malformed)
