"""Top up one session file: what a run does (runner.py), for a single file the caller names.

The statusline calls this on every prompt for the live session only, in the connection it then
reads from. The runner's rules hold unchanged (it is the runner's planning and processing code):
a file that did not change by stat or hash is skipped, a file that grew is read from its stored
offset, a rewritten one from byte 0, and the file is marked only after its rows are committed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipelines.processors.contract import SessionProcessor
from pipelines.processors.runner import _commit, _plan, _process_one, empty_stats
from resources.sessions import SessionFile
from resources.state import Connection, load_processor_state, mark_processed

log = logging.getLogger(__name__)


def session_file(sessions_root: Path | str, path: Path | str) -> SessionFile | None:
    """The `SessionFile` for ``path`` if it is a ``.jsonl`` file under ``<root>/<project>/``, else None."""
    root, path = Path(sessions_root).resolve(), Path(path).resolve()
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    if len(rel.parts) < 2 or path.suffix != ".jsonl":
        return None
    st = os.stat(path)
    return SessionFile(rel.as_posix(), str(path), rel.parts[0], st.st_size, st.st_mtime_ns)


def top_up_file(processor: SessionProcessor, file: SessionFile, conn: Connection) -> dict:
    """Bring ``processor``'s rows for ``file`` up to date; returns the runner's stats for it."""
    stats = empty_stats()
    stats["scanned"] = 1
    tasks, unchanged = _plan([file], load_processor_state(conn, processor.name, [file.key]), {}, stats)
    mark_processed(conn, processor.name, unchanged)
    processor.begin_run()
    malformed: list = []
    for task in tasks:
        mark = _process_one(processor, task, conn, stats, malformed, log)
        if mark is not None:
            _commit(processor, conn, [mark], malformed, stats, log)
    stats.update(processor.end_run())
    return stats
