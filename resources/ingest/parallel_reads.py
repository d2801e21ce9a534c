"""Reading session files in worker processes, one connection chunk ahead of the runner's commits."""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from resources.ingest.contract import SessionProcessor

READ_BATCH_FILES = 16
"""Files per message to a worker process when files are read in parallel."""


@dataclass
class WorkerRead:
    """What a worker read of one file (or the exception it raised), and when the read began."""

    started: datetime
    value: object = None
    error: BaseException | None = None


def _read_files(processor_type: type[SessionProcessor], files: list[tuple[str, str, str, int]]) -> list[WorkerRead]:
    """In a worker process: `SessionProcessor.read_session` of each ``(path, project, key, offset)``."""
    reads = []
    for path, project, key, offset in files:
        started = datetime.now(UTC)
        try:
            reads.append(WorkerRead(started, processor_type.read_session(Path(path), project, key, offset)))
        except Exception as exc:
            reads.append(WorkerRead(started, error=exc))
    return reads


class ParallelReads:
    """Reads the files of connection chunk n+1 in worker processes while chunk n is taken and committed,
    so at most two chunks of read rows are held at once. Files go to workers in small batches: one
    message per file would cost more than reading a small file."""

    def __init__(self, processor: SessionProcessor, chunks: list[list], workers: int):
        self.processor_type = type(processor)
        self.chunks = chunks
        # fork: a worker needs no imports of its own and starts in milliseconds; elsewhere the platform's default
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
        self.pool = ProcessPoolExecutor(workers, mp_context=context)
        self.submitted: dict[int, list] = {}

    def __enter__(self) -> ParallelReads:
        self._submit(0)
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, n: int) -> None:
        if n < len(self.chunks) and n not in self.submitted:
            files = [(t.file.fspath, t.file.project, t.file.key, t.start_offset) for t in self.chunks[n]]
            self.submitted[n] = [self.pool.submit(_read_files, self.processor_type, files[i:i + READ_BATCH_FILES])
                                 for i in range(0, len(files), READ_BATCH_FILES)]

    def chunk(self, n: int) -> list[WorkerRead]:
        self._submit(n)
        self._submit(n + 1)
        return [read for future in self.submitted.pop(n) for read in future.result()]
