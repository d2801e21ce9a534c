"""Reading session files in worker processes, one connection chunk ahead of the runner's commits."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from resources.ingest.contract import SessionProcessor
from resources.ingest.session_files import compute_file_hash, tail_fingerprint

READ_BATCH_FILES = 16
"""Files per message to a worker process when files are read in parallel, at least."""
BATCHES_PER_WORKER = 4
"""A chunk of many files goes to each worker in about this many messages, not one per `READ_BATCH_FILES`: each
message costs both processes a call, a pickle and a pipe, and 2,000 sessions in batches of 125 instead of 16
cost the workers 0.05-0.1 s of CPU less (and end as evenly: a batch is ~60 ms of work)."""
PR_SET_PDEATHSIG = 1
"""prctl(2): the signal a process gets when its parent ends."""
F_SETPIPE_SZ = 1031
"""fcntl(2), Linux: set a pipe's capacity."""
RESULT_PIPE_BYTES = 1 << 20
"""The capacity asked for the pipe that carries the workers' reads back (Linux's default: 64 KiB). The pool's
thread in this process reads a message one pipe's worth at a time and takes Python's lock for each part:
while this process's main thread is busy (Dagster starting, during the prefetch) it waits for it up to the
switch interval, and the worker waits on a full pipe meanwhile. 1 MiB is Linux's default cap for an
unprivileged process; a system that caps pipes lower gets its cap (`result_pipe_bytes`)."""

_digests: dict[tuple[str, str, int], tuple[tuple[int, int, int], str | None]] = {}
"""In a worker process: the hashes and tail fingerprints it computed, by ``(kind, path, bytes)``, with the file's
(inode, size, mtime) then (see `_digest`)."""


@dataclass
class WorkerRead:
    """What a worker read of one file (or the exception it raised), and when the read began; with the
    file's hash when the runner left it to the worker (a file new to the processor), and the tail
    fingerprint before where the read ended (`SessionFile.tail`)."""

    started: datetime
    value: object = None
    error: BaseException | None = None
    file_hash: str | None = None
    tail: str | None = None


def read_files(processor_type: type[SessionProcessor],
               files: list[tuple[str, str, str, int, int, bool]]) -> list[WorkerRead]:
    """In a worker process: `SessionProcessor.read_session` of each ``(path, project, key, offset, size,
    hash_it)``, hashing the file's first ``size`` bytes first when ``hash_it``; the values as the processor
    sends them (`SessionProcessor.for_sending`)."""
    reads = []
    for path, project, key, offset, size, hash_it in files:
        started = datetime.now(UTC)
        try:
            file_hash = _digest("hash", compute_file_hash, path, size) if hash_it else None
            value, result = processor_type.read_session(Path(path), project, key, offset)
            end = result.end_offset if result.end_offset is not None else size
            try:
                tail = _digest("tail", tail_fingerprint, path, end) if end > 0 else None
            except OSError:  # as SessionFile.tail: no fingerprint, the next change reads the file again
                tail = None
            reads.append(WorkerRead(started, (value, result), file_hash=file_hash, tail=tail))
        except Exception as exc:
            reads.append(WorkerRead(started, error=exc))
    done = [read for read in reads if read.error is None]
    try:
        sent = processor_type.for_sending([read.value[0] for read in done])
    except Exception:  # a value that form cannot hold: sent as read, the run's commit finds its file
        return reads
    for read, value in zip(done, sent, strict=True):
        read.value = (value, read.value[1])
    return reads


def _digest(kind: str, compute, path: str, size: int) -> str | None:
    """``compute(path, size)``, or what this process computed for the same ``kind``, path and bytes while the
    file's inode, size and mtime were what they are now: a worker that reads a file for two processors (the
    prefetch) hashes it once."""
    st = os.stat(path)
    now = (st.st_ino, st.st_size, st.st_mtime_ns)
    known = _digests.get((kind, path, size))
    if known is not None and known[0] == now:
        return known[1]
    digest = compute(path, size)
    _digests[(kind, path, size)] = (now, digest)
    return digest


def batches(items: list, messages: int) -> list[list]:
    """``items`` cut into about ``messages`` consecutive batches of at least `READ_BATCH_FILES` each: one message
    to a worker process per batch."""
    size = max(READ_BATCH_FILES, -(-len(items) // messages))
    return [items[i:i + size] for i in range(0, len(items), size)]


def fork_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes that read files. Forked on Linux: a worker needs no imports of its own
    and starts in milliseconds (elsewhere the platform's default). A worker ends with this process, even
    killed: one left blocked on a result nobody reads would live on."""
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_end_with_parent, initargs=(os.getpid(),))
    _widen_result_pipe(pool)
    return pool


def result_pipe_bytes() -> int:
    """The capacity the workers' result pipe is given on Linux: `RESULT_PIPE_BYTES`, or the system's cap
    (``/proc/sys/fs/pipe-max-size``) when that is lower."""
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            return min(RESULT_PIPE_BYTES, int(f.read()))
    except (OSError, ValueError):
        return RESULT_PIPE_BYTES


def _widen_result_pipe(pool: ProcessPoolExecutor) -> None:
    """Give ``pool``'s result pipe `result_pipe_bytes` (Linux). The pipe is the executor's own (a private
    attribute): where it is not there, or the system refuses, the pipe keeps its size."""
    reader = getattr(getattr(pool, "_result_queue", None), "_reader", None)
    if sys.platform != "linux" or reader is None:
        return
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.fcntl(reader.fileno(), F_SETPIPE_SZ, result_pipe_bytes())


def _end_with_parent(parent: int) -> None:
    """In a worker process: be killed when the process that forked it ends (Linux; elsewhere nothing)."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the line above
        os._exit(1)


class ParallelReads:
    """Reads the files of connection chunk n+1 in worker processes while chunk n is taken and committed,
    so at most two chunks of read rows are held at once. Files go to workers in small batches: one
    message per file would cost more than reading a small file. ``ahead``: chunks submitted on entering
    (2 when the runner has work of its own before it takes the first chunk, or for a read ahead that starts
    before the runner gets to the processor)."""

    def __init__(self, processor: SessionProcessor, chunks: list[list], workers: int, ahead: int = 1):
        self.processor_type = type(processor)
        self.ahead = ahead
        self.chunks = chunks
        self.workers = workers
        self.pool = fork_pool(workers)
        self.submitted: dict[int, list] = {}

    def __enter__(self) -> ParallelReads:
        for n in range(self.ahead):
            self._submit(n)
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, n: int) -> None:
        if n < len(self.chunks) and n not in self.submitted:
            files = [(t.file.fspath, t.file.project, t.file.key, t.start_offset, t.file.size, t.file_hash is None)
                     for t in self.chunks[n]]
            self.submitted[n] = [self.pool.submit(read_files, self.processor_type, batch)
                                 for batch in batches(files, self.workers * BATCHES_PER_WORKER)]

    def chunk(self, n: int) -> list[WorkerRead]:
        self._submit(n)
        self._submit(n + 1)
        return [read for future in self.submitted.pop(n) for read in future.result()]
