"""What a run reads: per processor, which files it has not processed and where to start in each.

`plan` splits the files into tasks (read from byte 0, or from the stored offset of a file that only
grew) and unchanged files whose mark only moves forward; `is_stable` is the stat-only test that skips a
file without reading it; `files_with_work` asks the same of every processor at once, for the command
line's "anything to do?" before it imports Dagster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from resources.ingest.files_to_read import FileToRead
from resources.ingest.run_stats import count_stat, report_error
from resources.ingest.session_files import SessionFile, compute_file_hash, tail_fingerprint
from resources.sources import source_type
from resources.state.store import ProcessedMark, ProcessorFileState, StateStore, unstable_files


@dataclass
class Task:
    """One file a processor reads in this run: from ``start_offset``, after ``items_before`` items of it."""

    file: FileToRead
    file_hash: str | None
    """None: not hashed yet, left to the worker process that reads the file (see `plan`)."""
    start_offset: int
    items_before: int
    origin: dict[str, str] = field(default_factory=dict)
    """Who the file comes from (`SessionProcessor.origin`): empty for this machine's own files."""
    hashed_late: bool = False
    """Hashed when read, not when planned."""


def is_stable(prev: ProcessorFileState | None, f: SessionFile) -> bool:
    """Unchanged since it was processed, by stat alone: same size and not modified since."""
    return prev is not None and prev.file_size == f.size and f.mtime_ns <= _ns(prev.processed_at)


def files_with_work(processor_names: Sequence[str], files: Sequence[SessionFile],
                    state: StateStore) -> dict[str, list[SessionFile]]:
    """Per processor of ``processor_names``, the ``files`` it has not processed at their current size and
    mtime (stat only, no reads): the ones a run would have anything to do for."""
    with state.connect() as conn:  # stored sizes and times only, no row objects (see unstable_files)
        return {name: unstable_files(conn, name, files) for name in processor_names}


def plan(
    files: list[SessionFile],
    previous: dict[str, ProcessorFileState],
    hashes: dict[str, str | OSError | None],
    stats: dict,
    verify: bool = False,
    workers_hash: bool = False,
) -> tuple[list[Task], list[ProcessedMark]]:
    """Split files into work to do and unchanged-content files whose processed_at only moves forward
    (``verify``: by content hash alone, never by stat). With ``workers_hash``, a file the processor has
    no state for is not hashed here: nothing is compared with its hash, which only goes into its mark,
    so the worker process that reads it hashes it (in parallel, and while the file is in the page cache)."""
    tasks: list[Task] = []
    unchanged: list[ProcessedMark] = []
    now = datetime.now(UTC)
    for f in files:
        prev = previous.get(f.key)
        if not verify and is_stable(prev, f):
            count_stat(stats, f.project, "skipped")
            continue
        if prev is None and workers_hash and f.key not in hashes:
            tasks.append(Task(f, None, 0, 0))
            continue
        if f.key not in hashes:
            hashes[f.key] = hash_or_error(f)
        file_hash = hashes[f.key]
        if isinstance(file_hash, OSError):
            report_error(stats, f.project, f.key, file_hash)
            continue
        if file_hash is None:
            count_stat(stats, f.project, "vanished")
            continue
        if prev is not None and prev.is_processed(file_hash):
            count_stat(stats, f.project, "skipped")
            unchanged.append(
                ProcessedMark(f.key, f.project, prev.items_extracted, file_hash, f.size, prev.byte_offset,
                              prev.tail_hash, now)
            )
            continue
        offset = _resume_offset(f, prev)
        tasks.append(Task(f, file_hash, offset, prev.items_extracted if offset and prev else 0))
    return tasks, unchanged


def hash_or_error(f: SessionFile) -> str | OSError | None:
    try:
        return compute_file_hash(f.fspath, f.size)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc


def _resume_offset(f: SessionFile, prev: ProcessorFileState | None) -> int:
    # Only a file that grew can be resumed, and only if its agent only appends; same size with a new
    # hash was rewritten in place.
    if prev is None or prev.byte_offset <= 0 or f.size <= prev.file_size or not source_type(f.key).append_only:
        return 0
    try:
        same_prefix = tail_fingerprint(f.fspath, prev.byte_offset) == prev.tail_hash
    except OSError:
        return 0
    return prev.byte_offset if same_prefix else 0


def _ns(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000) * 1000
