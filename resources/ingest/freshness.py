"""Which files a processor has fallen behind on: modified a while ago and still not processed at their current
size and mtime (stat only, no reads), per project."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from resources.ingest.plan import is_stable
from resources.ingest.session_files import SessionFile
from resources.state.store import load_processor_state


def stale_files(conn: duckdb.DuckDBPyConnection, processor_names: Sequence[str], files: Sequence[SessionFile],
                older_than_ns: int) -> dict[str, dict[str, int]]:
    """Per processor name, per project: how many of ``files`` were modified before ``older_than_ns`` and
    are not processed at their current size and mtime. A project with none is absent."""
    settled = [f for f in files if f.mtime_ns < older_than_ns]
    out: dict[str, dict[str, int]] = {}
    for name in processor_names:
        state = load_processor_state(conn, name, [f.key for f in settled])
        per: dict[str, int] = {}
        for f in settled:
            if not is_stable(state.get(f.key), f):
                per[f.project] = per.get(f.project, 0) + 1
        out[name] = per
    return out
