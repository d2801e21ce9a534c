"""The runner: per processor, find the files it has not processed, run it on each, commit, mark.

Rules (each one tested in ``tests/test_runner.py``, the threads' in ``tests/test_runner_threads.py``; taking a file and
committing, split when a commit fails, are `resources.ingest.batch`'s):
- a stable file (size unchanged and mtime <= processed_at) is skipped without reading or hashing it,
  unless the run verifies content (``verify``): then every file is hashed, so a same-size rewrite
  whose mtime was put back (``touch -r``) is read again;
- a file whose content hash equals the stored one is skipped (its processed_at moves forward);
- a file new to a processor that reads in worker processes is hashed (and its tail fingerprinted) by
  the worker that reads it, not while planning: there is no stored hash to compare, and the main
  process, which takes and commits every file's rows, is what a large first read waits for;
- every file seen is recorded in ``session_files`` before any is marked processed (while the workers
  read, when they do; the hashes they computed are recorded after);
- a file that only grew (size larger, the 4 KiB before the stored offset unchanged) is read from the
  stored offset if its agent only appends (`resources.sources.base.Source.append_only`); anything
  else is read from byte 0;
- a processor that raises on a file leaves it unmarked (retried next run); the other files go on;
- a processor that `runs_beside` (the archive) runs in a thread from the start of the run, beside the
  others (`resources.ingest.beside`); it is reported in its turn, its log and errors come out then;
- a later processor with `parallel_reads` (memory) has its files read ahead in one worker process from
  the start of a run of `READ_AHEAD_MIN_BYTES` to `READ_AHEAD_MAX_BYTES`, on the other core while the first processor
  works in this one; it takes and commits them in a thread beside (its work in this process is taking
  what was read and writing it), as it would have read them, and is reported in its turn; when a
  worker process dies (killed), this process reads the files it did not hand back;
- reads started before the run (``prefetch``, `resources.ingest.prefetch`) are taken instead, by the first
  processor in this thread and by a later one in a thread beside, for the files whose read is the one the
  run plans; the run reads the others itself;
- a later processor whose files were read before the run begins (``begin_run``) in a thread of its own while
  the run plans, and the run waits for it in that processor's turn (what it raised is raised there); it is
  waited for before the run forks a reading worker, and no such thread outlives the run;
- a commit that fails is split: its files are processed again in halves, each committed on its own,
  down to the file whose rows the commit cannot take; only that file stays unmarked and is reported;
  a failure of the environment (`resources.environment`: a full disk, a lost server) is raised instead,
  and no file is blamed for it;
- a wrong return type counts as 0 items and the file is marked; 0 items still marks the file;
- a missing sessions root gives all-zero stats.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import BrokenExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from resources.ingest.batch import Taken, commit_taken, take
from resources.ingest.beside import Beside, HeldLog, InThread
from resources.ingest.contract import SessionProcessor
from resources.ingest.fewer_collections import fewer_collections
from resources.ingest.plan import Task, plan
from resources.ingest.run_stats import count_stat, empty_stats
from resources.ingest.session_files import (
    SessionFile,
    walk_sessions,
)
from resources.state.store import (
    Connection,
    StateStore,
    load_processor_state,
    mark_processed,
    record_file_hashes,
    record_session_files,
)

if TYPE_CHECKING:  # the worker pool is imported where files are read in parallel: a report's top-up never is
    from resources.ingest.parallel_reads import ParallelReads
    from resources.ingest.prefetch import Prefetch, PrefetchedReads

FILES_PER_CONNECTION = 1000
BYTES_PER_CONNECTION = 64 << 20
"""A DuckDB connection is held for at most this many files or bytes of session data, so other
processes get the database in between (opening and checkpointing one costs tens of ms)."""
READ_AHEAD_MIN_BYTES = 8 << 20
"""Bytes of a later processor's files from which they are read ahead in a worker process (see the
module docstring); below, starting the worker and passing the rows back cost about what it saves."""
READ_AHEAD_MAX_BYTES = 256 << 20
"""Bytes above which they are not: a read ahead runs the processor beside the first, so both hold a batch
at once (a cold ingest of 20,000 sessions, 1.2 GB, peaked at 939 MB in one process read ahead, 690 MB not)."""

log = logging.getLogger(__name__)

Progress = Callable[[int, int, int], None]
"""``progress(files_done, files_total, bytes_done)``."""


def run_processors(*args, **kwargs) -> dict[str, dict]:
    """Run every processor over the new and changed files (`iter_processors`, same arguments) and return
    ``{processor_name: stats}`` (see `empty_stats`): run totals, the failing files, and the same numbers
    for each project under ``by_project`` (every project with a file on disk has an entry)."""
    return dict(iter_processors(*args, **kwargs))


def iter_processors(
    processors: Sequence[SessionProcessor],
    sessions_root: Path | str,
    state: StateStore,
    projects: set[str] | None = None,
    logger: logging.Logger | None = None,
    files: Sequence[SessionFile] | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    verify: bool = False,
    prefetch: Prefetch | None = None,
) -> Iterator[tuple[str, dict]]:
    """Run every processor over the new and changed files under ``sessions_root`` (of ``projects``),
    yielding each one's ``(name, stats)`` as soon as it has run: those run in this thread in the order
    given, and in the turns of those run beside, these in the order they finish. The ingest step reports
    the usage warehouse done (reports read it) while memory and the archive are still written, and reports
    the archive while memory still builds its full-text index (the archive usually ends first).

    ``files`` is the walk of those projects when the caller already has it (one walk per run).
    ``workers`` > 1 reads files in that many worker processes for a processor with ``parallel_reads``;
    ``progress(files_done, files_total, bytes_done)`` is called after each file.
    ``verify`` hashes every file, not only those whose size or mtime changed (``ingest --all``).
    ``prefetch``: reads of the run's new files started before it (`resources.ingest.prefetch.start_prefetch`).
    The run holds Python's garbage collector back (`fewer_collections`).
    """
    with fewer_collections():
        yield from _iter_processors(processors, sessions_root, state, projects, logger, files, workers, progress,
                                    verify, prefetch)


def _iter_processors(processors, sessions_root, state, projects, logger, files, workers, progress, verify, prefetch):
    logger = logger or log
    files = list(walk_sessions(sessions_root, projects) if files is None else files)
    results = {p.name: empty_stats() for p in processors}
    if not files:
        yield from results.items()
        return
    early = _begin_early(processors, workers, progress, prefetch)
    try:
        yield from _planned(processors, state, logger, files, workers, progress, verify, prefetch, results, early)
    finally:  # a begin_run the run never got to is waited for: no thread outlives the run
        for began in early.values():
            began.join()


def _planned(processors, state, logger, files, workers, progress, verify, prefetch, results, early):
    """`iter_processors` once the files are walked and the early `begin_run`s started (``early``): plan, then
    run each processor."""
    hashes: dict[str, str | OSError | None] = {}
    work: dict[str, list[Task]] = {}
    first = processors[0] if processors else None
    with state.connect() as conn:  # one short connection for all planning: opening one costs tens of ms
        for processor in processors:
            stats = results[processor.name]
            for f in files:
                count_stat(stats, f.project, "scanned")
            previous = load_processor_state(conn, processor.name)
            work[processor.name], unchanged = plan(files, previous, hashes, stats, verify,
                                                    workers_hash=_reads_in_parallel(processor, workers))
            mark_processed(conn, processor.name, unchanged)
        for tasks in work.values():  # a hash another processor's planning computed is not computed again
            for task in tasks:
                if task.file_hash is None and isinstance(hashes.get(task.file.key), str):
                    task.file_hash = hashes[task.file.key]
        overlap = first is not None and _reads_in_parallel(first, workers, work[first.name])
        if not overlap:
            record_session_files(conn, _session_file_rows(files, hashes))

    def record_seen() -> None:
        """Every file seen recorded while the first processor's workers read (and this process would wait),
        before any file is marked processed."""
        with state.connect() as conn:
            record_session_files(conn, _session_file_rows(files, hashes))

    # forks its worker before any thread starts (those begun early end first)
    ahead = _start_read_ahead(processors, work, workers, prefetch, [b.join for b in early.values()])
    finished: queue.SimpleQueue[str] = queue.SimpleQueue()
    beside = {p.name: Beside(functools.partial(_execute_beside, p, work[p.name], state, results[p.name],
                                               ahead.pop(p.name, None), early.pop(p.name, None)), p.name, finished)
              for p in _run_beside(processors, work, workers, progress, ahead)}
    by_name, in_turns = {p.name: p for p in processors}, set(beside)
    try:
        for processor in processors:
            if processor.name in in_turns:  # its turn goes to the first of those beside to finish
                processor = by_name[finished.get()]
                beside.pop(processor.name).join(logger)
            else:
                _execute(processor, work[processor.name], state, results[processor.name], logger, workers, progress,
                         reading=record_seen if overlap and processor is first else None,
                         ahead=ahead.pop(processor.name, None), begun=early.pop(processor.name, None))
            for task in work[processor.name]:  # the hashes the workers computed, for session_files
                if task.file_hash is not None:
                    hashes.setdefault(task.file.key, task.file_hash)
            yield processor.name, results[processor.name]
    finally:  # the caller stopped early (an interrupt, an error): the threads stop before their next chunk
        for running in beside.values():
            running.cancel()
        for reads in ahead.values():
            reads.__exit__(None, None, None)
    late = {key: h for key in {t.file.key for tasks in work.values() for t in tasks if t.hashed_late}
            if isinstance(h := hashes.get(key), str)}
    if late:  # their hashes, which the first record of them could not hold
        with state.connect() as conn:
            record_file_hashes(conn, late)


def top_up_files(processor: SessionProcessor, files: Sequence[SessionFile], conn: Connection,
                 logger: logging.Logger | None = None) -> dict:
    """Bring ``processor``'s rows for ``files`` up to date, in the caller's connection and one commit (a
    report tops up the few files that changed since the last one). The same rules as a run: unchanged
    by stat or hash is skipped, grown is read from its stored offset, the mark follows the commit. Only
    the state rows of ``files`` are read. Returns the stats, as `run_processors` does for a processor."""
    logger = logger or log
    stats = empty_stats()
    for f in files:
        count_stat(stats, f.project, "scanned")
    tasks, unchanged = plan(list(files), load_processor_state(conn, processor.name, [f.key for f in files]), {},
                             stats)
    mark_processed(conn, processor.name, unchanged)
    processor.begin_run()
    taken = [t for t in (take(processor, task, conn, stats, logger) for task in tasks) if t is not None]
    if taken:
        commit_taken(processor, conn, taken, stats, logger)
    stats.update(processor.end_run())
    return stats


def _execute(
    processor: SessionProcessor,
    tasks: list[Task],
    state: StateStore,
    stats: dict,
    logger: logging.Logger,
    workers: int = 1,
    progress: Progress | None = None,
    reading: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
    ahead: ParallelReads | PrefetchedReads | None = None,
    begun: InThread | None = None,
) -> None:
    """Process and commit ``tasks``; ``reading()`` is called once the worker processes read (or at once when
    this process reads), with work this process would otherwise do before the reads or wait through.
    Once ``stop`` is set, no further chunk of files is read (what was not committed stays unmarked).
    ``ahead``: the worker reads of ``tasks`` started earlier (`_start_read_ahead`), taken in their chunks (a
    task without one is read here). ``begun``: the processor's `begin_run`, started before the run planned."""
    processor.files_in_run = len(tasks)
    if begun is not None:
        begun.wait()
    else:
        processor.begin_run()
    commit_every = processor.commit_every_files or max(len(tasks), 1)
    pending: list[Taken] = []
    done = 0
    done_bytes = 0
    chunks = ahead.chunks if ahead is not None else list(_connection_chunks(tasks))
    parallel = ahead is None and _reads_in_parallel(processor, workers, tasks)
    if parallel:
        from resources.ingest.parallel_reads import ParallelReads
    # two chunks from the start: this process records the files seen and loads what commits need before it
    # takes the first, and with one the workers would wait for it before reading the second
    with ahead or (ParallelReads(processor, chunks, workers, ahead=2) if parallel else contextlib.nullcontext()) \
            as reads:
        if reading is not None:
            reading()
        if reads:
            processor.while_reading()
        for n, chunk in enumerate(chunks):
            if stop is not None and stop.is_set():
                break
            try:
                outcomes = reads.chunk(n) if reads else [None] * len(chunk)  # read before the connection is opened
            except BrokenExecutor as exc:  # a worker process died (killed): this process reads the rest itself
                logger.warning("%s: a worker process reading files ended (%s); reading them here", processor.name, exc)
                reads, outcomes = None, [None] * len(chunk)
            # the worker processes hold the cores: DuckDB's own threads would only contend with them (a batch's
            # upsert costs 2-3x the CPU with two)
            with state.connect() as conn, _single_threaded(conn) if reads else contextlib.nullcontext():
                for task, outcome in zip(chunk, outcomes, strict=True):
                    taken = take(processor, task, conn, stats, logger, outcome)
                    if taken is not None:
                        pending.append(taken)
                    done += 1
                    done_bytes += task.file.size - task.start_offset
                    if pending and (len(pending) >= commit_every or done == len(tasks)):
                        commit_taken(processor, conn, pending, stats, logger)
                        pending = []
                    if progress is not None:
                        progress(done, len(tasks), done_bytes)
    stats.update(processor.end_run())


@contextlib.contextmanager
def _single_threaded(conn: Connection) -> Iterator[None]:
    """DuckDB runs on one thread meanwhile. The setting is the database's, shared by every connection this
    process has open to it (a report's refresh holds one), so it is reset afterwards."""
    conn.execute("SET threads = 1")
    try:
        yield
    finally:
        conn.execute("RESET threads")


def _run_beside(processors: Sequence[SessionProcessor], work: dict[str, list[Task]], workers: int,
                progress: Progress | None, ahead: dict[str, ParallelReads | PrefetchedReads]) -> list[SessionProcessor]:
    """The processors to run in a thread beside the others (`SessionProcessor.runs_beside`, or read ``ahead``
    in a worker process, which forked before any thread started): not the first (the others wait for
    nothing it does), and none when a processor reads in worker processes of the run's own (no fork while
    a thread runs) or progress is shown (it counts one processor's files at a time)."""
    if progress is not None or any(_reads_in_parallel(p, workers, work[p.name]) for p in processors):
        return []
    return [p for p in processors[1:] if (p.runs_beside or p.name in ahead) and work[p.name]]


def _start_read_ahead(processors: Sequence[SessionProcessor], work: dict[str, list[Task]], workers: int,
                      prefetch: Prefetch | None = None, before_fork: Sequence[Callable[[], None]] = (),
                      ) -> dict[str, ParallelReads | PrefetchedReads]:
    """The reads of each processor with `parallel_reads` that were started before the run (``prefetch``), and
    worker reads, started now, of the processors after the first that have `READ_AHEAD_MIN_BYTES` to
    `READ_AHEAD_MAX_BYTES` to read and none started: one worker process reads them while the first
    processor works in this one. Not on one core, and not when this run reads in worker processes already
    (``workers`` > 1). Each of ``before_fork`` is called before the first fork (no fork while a thread runs)."""
    if workers > 1 or (os.cpu_count() or 1) < 2:
        return {}
    ahead: dict[str, ParallelReads | PrefetchedReads] = {}
    for processor in processors:
        if prefetch is not None and processor.parallel_reads and work[processor.name]:
            started = prefetch.reads(processor.name, list(_connection_chunks(work[processor.name])))
            if started is not None:
                ahead[processor.name] = started
    for processor in processors[1:]:
        tasks = work[processor.name]
        if (processor.name not in ahead and processor.parallel_reads and len(tasks) > 1
                and READ_AHEAD_MIN_BYTES <= sum(t.file.size - t.start_offset for t in tasks) <= READ_AHEAD_MAX_BYTES):
            from resources.ingest.parallel_reads import ParallelReads

            for wait in before_fork:
                wait()
            with warnings.catch_warnings():  # pylance warns at any fork; the worker only parses, it never opens Lance
                warnings.filterwarnings("ignore", "lance is not fork-safe")
                reads = ParallelReads(processor, list(_connection_chunks(tasks)), 1, ahead=2).__enter__()
            ahead[processor.name] = reads
    return ahead


def _execute_beside(processor: SessionProcessor, tasks: list[Task], state: StateStore, stats: dict,
                    ahead: ParallelReads | PrefetchedReads | None, begun: InThread | None, log: HeldLog,
                    stop: threading.Event) -> None:
    try:
        _execute(processor, tasks, state, stats, log, stop=stop, ahead=ahead, begun=begun)
    finally:  # its worker ends with it, also when it raised before taking a chunk
        if ahead is not None:
            ahead.__exit__(None, None, None)


def _begin_early(processors: Sequence[SessionProcessor], workers: int, progress: Progress | None,
                 prefetch: Prefetch | None) -> dict[str, InThread]:
    """`begin_run` of each processor after the first whose new files were read before the run (``prefetch``),
    started now, while this thread plans: it needs no plan, and what it does first (memory imports Lance and
    creates its tables, 0.2-0.5 s, mostly waits) is then done when the processor's turn beside the first comes.
    None when nothing would run beside (workers of the run's own, progress shown)."""
    if prefetch is None or workers > 1 or progress is not None or (os.cpu_count() or 1) < 2:
        return {}
    return {p.name: InThread(p.begin_run, f"sessionlake-{p.name}-begin")
            for p in processors[1:] if p.name in prefetch.files}


def _reads_in_parallel(processor: SessionProcessor, workers: int, tasks: Sequence[Task] | None = None) -> bool:
    """Whether ``processor`` reads in worker processes (``tasks``: these; None: any more than one)."""
    return workers > 1 and processor.parallel_reads and (tasks is None or len(tasks) > 1)


def _connection_chunks(tasks: list[Task]) -> Iterator[list[Task]]:
    chunk: list[Task] = []
    size = 0
    for task in tasks:
        chunk.append(task)
        size += task.file.size - task.start_offset
        if len(chunk) >= FILES_PER_CONNECTION or size >= BYTES_PER_CONNECTION:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _session_file_rows(files: list[SessionFile], hashes: dict) -> list[dict]:
    """Rows for ``session_files``; the hash only where this run computed one (None keeps the stored one)."""
    return [
        {"path": f.key, "project": f.project, "size": f.size, "mtime_ns": f.mtime_ns,
         "file_hash": h if isinstance(h := hashes.get(f.key), str) else None, "byte_offset": None}
        for f in files
    ]
