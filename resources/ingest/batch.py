"""One processor's files between two commits: each file processed (or a worker's read of it taken) and
then committed, with the runner's rules (`resources.ingest.runner`): a file the processor fails on is
reported and left out, and a failed commit is split down to the file it could not take. `Batch` gives
those rules to a caller that chooses its files and commits itself (the team ingest, the memory rebuild)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from resources.environment import environment_failure
from resources.ingest.contract import ProcessorResult, SessionProcessor
from resources.ingest.files_to_read import FileToRead
from resources.ingest.plan import Task, hash_or_error
from resources.ingest.run_stats import count_stat, report_error
from resources.ingest.session_files import MalformedLine
from resources.state.store import Connection, ProcessedMark, mark_processed, record_malformed_lines

if TYPE_CHECKING:
    from resources.ingest.parallel_reads import WorkerRead

SPLIT_BUDGET = 4
"""Splitting a failed commit re-processes at most this many times its files: one bad file costs about
2x, and a failure that is no file's fault (a full disk) gives up after a few rounds, not one commit per file."""

log = logging.getLogger(__name__)


@dataclass
class Taken:
    """A file the processor took, waiting for the commit that holds its rows."""

    task: Task
    mark: ProcessedMark
    malformed: list[MalformedLine]
    bytes_read: int


def take(processor, task: Task, conn, stats: dict, logger, read: WorkerRead | None = None) -> Taken | None:
    """Process ``task``'s file, or take what a worker ``read`` of it (see `ParallelReads`)."""
    f = task.file
    started = read.started if read is not None else datetime.now(UTC)
    processor.origin = task.origin
    try:
        if read is None:
            if task.file_hash is None:  # left to a worker that did not read it (a run of one file): hash it now
                task.file_hash = hash_or_error(f)
                task.hashed_late = True
                if task.file_hash is None:
                    raise FileNotFoundError(f.key)
                if isinstance(task.file_hash, OSError):
                    error, task.file_hash = task.file_hash, None
                    raise error
            with f.opened(task.start_offset) as path:
                result = processor.process_session(path, f.project, f.key, conn, start_offset=task.start_offset)
        elif read.error is not None:
            raise read.error
        else:
            value, result = read.value
            processor.take(value)
            if task.file_hash is None:
                task.file_hash, task.hashed_late = read.file_hash, True
    except FileNotFoundError:
        count_stat(stats, f.project, "vanished")
        logger.warning("%s: %s vanished while being read; it will be picked up if it returns", processor.name, f.key)
        return None
    except Exception as exc:  # failure isolation: one bad file never stops the others
        report_error(stats, f.project, f.key, exc)
        logger.warning("%s failed on %s (will retry next run): %s", processor.name, f.key, exc, exc_info=True)
        return None
    if not isinstance(result, ProcessorResult):
        logger.warning("%s returned %r for %s; counting 0 items", processor.name, type(result).__name__, f.key)
        result = ProcessorResult(items_count=0)
    end_offset = result.end_offset if result.end_offset is not None else f.size
    tail = f.tail(end_offset) if read is None else read.tail  # a worker fingerprints what it read
    items = task.items_before + _as_count(result.items_count)
    mark = ProcessedMark(f.key, f.project, items, task.file_hash, f.size, end_offset, tail, started)
    return Taken(task, mark, list(result.malformed), result.bytes_read)


def _as_count(value) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def commit_taken(processor, conn, pending: list[Taken], stats: dict, logger,
            budget: list[int] | None = None, mark: bool = True) -> list[ProcessedMark]:
    """Commit the processor's batch, then mark its files and keep their malformed lines (unless not
    ``mark``); returns the marks of the files committed.

    A failed commit is split to find the file it could not take: the batch is discarded, and each half
    is processed again and committed on its own, down to single files. Only files whose own commit
    fails stay unmarked and are reported; re-processing stops at `SPLIT_BUDGET` times the batch,
    after which what is left is reported as failed together.
    """
    try:
        processor.commit(conn)
    except Exception as exc:
        processor.discard()
        if environment_failure(exc):  # a full disk, a lost server: no file is to blame, none is split out
            raise
        budget = [SPLIT_BUDGET * len(pending)] if budget is None else budget
        if len(pending) == 1 or budget[0] < len(pending):
            for taken in pending:
                report_error(stats, taken.mark.project, taken.mark.session_file, exc, prefix="commit failed: ")
            logger.error("%s commit failed; %d file(s) stay unprocessed: %s", processor.name, len(pending), exc,
                         exc_info=True)
            return []
        logger.warning("%s commit of %d files failed (%s); committing them in halves to find the file",
                       processor.name, len(pending), exc)
        budget[0] -= len(pending)
        middle = len(pending) // 2
        committed: list[ProcessedMark] = []
        for half in (pending[:middle], pending[middle:]):
            again = [t for t in (take(processor, p.task, conn, stats, logger) for p in half) if t]
            if again:
                committed += commit_taken(processor, conn, again, stats, logger, budget, mark)
        return committed
    if mark:
        mark_processed(conn, processor.name, [t.mark for t in pending])
        record_malformed_lines(conn, [(t.mark.session_file, m) for t in pending for m in t.malformed])
    for t in pending:
        project = t.mark.project
        count_stat(stats, project, "processed")
        # this run's items: the mark keeps the file's running total, and a grown file adds only its new ones
        count_stat(stats, project, "items_extracted", t.mark.items_extracted - t.task.items_before)
        count_stat(stats, project, "lines_malformed", len(t.malformed))
        count_stat(stats, project, "bytes_read", t.bytes_read)
    return [t.mark for t in pending]


class Batch:
    """One processor's files between two commits, for a caller that decides itself which files to read
    and when to commit (the team ingest reads pushed versions pack by pack), with a run's rules: a file
    the processor fails on is reported and left out; `commit` splits a failed commit down to the file
    it could not take, marks the committed files processed (unless not ``mark``: a rebuild re-derives
    rows of files already marked) and counts them in ``stats``."""

    def __init__(self, processor: SessionProcessor, stats: dict, logger: logging.Logger | None = None,
                 mark: bool = True):
        self.processor, self.stats, self.logger, self.mark = processor, stats, logger or log, mark
        self.pending: list[Taken] = []

    def read(self, conn: Connection, file: FileToRead, file_hash: str, start_offset: int = 0,
             items_before: int = 0, origin: dict[str, str] | None = None) -> ProcessedMark | None:
        """Process ``file`` from ``start_offset`` into the batch; its mark-to-be, or None when it failed
        (reported) or vanished."""
        taken = take(self.processor, Task(file, file_hash, start_offset, items_before, origin or {}),
                             conn, self.stats, self.logger)
        if taken is None:
            return None
        self.pending.append(taken)
        return taken.mark

    def commit(self, conn: Connection) -> list[ProcessedMark]:
        """Commit what was read since the last commit; the marks of the files committed."""
        pending, self.pending = self.pending, []
        return commit_taken(self.processor, conn, pending, self.stats, self.logger, mark=self.mark) if pending else []
