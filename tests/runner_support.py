"""A real, tiny processor for the runner's tests (tests/test_runner*.py, tests/test_fewer_collections.py)."""

from resources.ingest.contract import ProcessorResult, SessionProcessor
from resources.ingest.session_files import ParseStats, iter_jsonl


class LineCounter(SessionProcessor):
    """Counts JSON lines per file and remembers what it was asked to read (a real, tiny processor)."""

    def __init__(self, name="lines", fail_on=(), result_override=None):
        self.name = name
        self.fail_on = set(fail_on)
        self.result_override = result_override
        self.calls: list[tuple[str, int]] = []
        self.committed: list[str] = []
        self._batch: list[str] = []

    def process_session(self, session_path, project, session_key, conn, *, start_offset=0):
        self.calls.append((session_key, start_offset))
        if session_key in self.fail_on:
            raise ValueError(f"cannot handle {session_key}")
        stats = ParseStats()
        n = sum(1 for _ in iter_jsonl(session_path, start_offset, stats))
        self._batch.append(session_key)
        if self.result_override is not None:
            return self.result_override
        return ProcessorResult(items_count=n, end_offset=stats.end_offset, bytes_read=stats.bytes_read,
                               malformed=stats.malformed)

    def commit(self, conn):
        self.committed.extend(self._batch)
        self._batch.clear()
