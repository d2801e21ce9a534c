"""Reading a run's new files before the run, in a worker process, while the caller gets the run started.

`sessionlake ingest` knows which files are new before it imports Dagster and opens its instance, about
2 s on one core while the other is idle. `start_prefetch` forks one worker process there that hashes and
reads (`SessionProcessor.read_session`) the files new to each processor that reads in workers (usage,
memory), one processor after the other. The run's step takes what was read
(`resources.ingest.runner.iter_processors`, ``prefetch=``) instead of reading the files again.

The worker only reads: nothing is written before the run, which stays the one writer (its events, run
record, pool slot and recovery are those of any run). A read is used only for the same task the run plans
(the file new to the processor, read from byte 0, with the path, size and mtime the prefetch saw, and,
where the run hashed the file, the same hash); any other file of the run, or one whose read failed, is
read by the run itself, as without a prefetch. `Prefetch.close` ends the worker (a run that never started,
or one that is done).

When the run has usage's files to read, the worker also computes the price database's prices between
memory's reads and usage's (`Prefetch.prices`), so the run's process does not load genai-prices (about
0.17 s of CPU under Python's lock, beside memory's and the archive's threads).

Only `READ_AHEAD_MIN_BYTES` to `READ_AHEAD_MAX_BYTES` of new data are read ahead (the runner's bounds for a
read ahead): below, a worker costs about what it saves; above, every read would be held at once.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from concurrent.futures import Future

from resources.ingest.contract import SessionProcessor
from resources.ingest.parallel_reads import WorkerRead, batches, fork_pool, read_files
from resources.ingest.plan import Task
from resources.ingest.session_files import SessionFile
from resources.state.store import StateStore, known_files

BATCHES = 16
"""Messages to the worker per processor: each costs both processes a call, a pickle and a pipe (see
`resources.ingest.parallel_reads.BATCHES_PER_WORKER`), and the run takes a batch once it is read whole."""


class Prefetch:
    """Reads of ``files`` (per processor name, the files to read for it) started in one worker process, in
    `BATCHES` batches (`resources.ingest.parallel_reads.batches`): every file of the first of ``types``
    (hashed and read), then the next's; with ``prices_before``, the price database's prices
    (`resources.usage.prices_ahead.pickled_prices`) are computed just before that processor's reads."""

    def __init__(self, types: Sequence[type[SessionProcessor]], files: dict[str, list[SessionFile]],
                 prices_before: str | None = None):
        self.files = {t.name: len(files[t.name]) for t in types}
        """Per processor, the files read ahead."""
        self.taken = dict.fromkeys(self.files, 0)
        """Per processor, the reads the run took."""
        self.prices_taken = False
        """Whether the run took the prices the worker computed."""
        self.pool = fork_pool(1)
        self._where: dict[str, dict[str, tuple[SessionFile, Future, int]]] = {}
        self._loaded: dict[Future, list[WorkerRead | None]] = {}
        self._prices: Future | None = None
        for processor_type in types:
            if processor_type.name == prices_before:
                from resources.usage.prices_ahead import pickled_prices

                self._prices = self.pool.submit(pickled_prices)
            where = self._where[processor_type.name] = {}
            for batch in batches(files[processor_type.name], BATCHES):
                future = self.pool.submit(_read_pickled, processor_type,
                                          [(f.fspath, f.project, f.key, 0, f.size, True) for f in batch])
                where.update((f.key, (f, future, position)) for position, f in enumerate(batch))

    def reads(self, name: str, chunks: list[list[Task]]) -> PrefetchedReads | None:
        """What was read of ``chunks``' files for processor ``name``, as the runner takes a worker's reads (see
        `PrefetchedReads`); None when none of them was read ahead for it."""
        where = self._where.get(name, {})
        if not any(task.file.key in where for chunk in chunks for task in chunk):
            return None
        return PrefetchedReads(self, name, chunks)

    def take(self, name: str, task: Task) -> WorkerRead | None:
        """The read of ``task``'s file for processor ``name``, if it is the read the run would make (see the
        module docstring), else None; a read is given once, and then forgotten here."""
        found = self._where[name].pop(task.file.key, None)
        if found is None:
            return None
        f, future, position = found
        reads = self._loaded.get(future)
        if reads is None:  # each batch is one processor's: only its thread loads it
            reads = self._loaded[future] = pickle.loads(future.result())
        read, reads[position] = reads[position], None
        if position == len(reads) - 1:
            del self._loaded[future]
        if (task.file != f or task.start_offset or task.items_before or read.error is not None
                or task.file_hash not in (None, read.file_hash)):
            return None
        self.taken[name] += 1
        return read

    def prices(self) -> dict | None:
        """The price database's prices the worker computed (a `resources.usage.pricing.DatabaseSource`); None
        when it was not asked to or failed, and the run loads the database itself."""
        if self._prices is None:
            return None
        try:
            prices = pickle.loads(self._prices.result())
        except Exception:  # a genai-prices release that breaks the bare import: only the speed is lost
            return None
        self.prices_taken = True
        return prices

    def summary(self) -> str:
        """One line for the run's log: per processor, how many files the run took as read before it (and whether
        it took the prices)."""
        return "files read before the run and taken by it: " + ", ".join(
            f"{name} {n:,} of {self.files[name]:,}" for name, n in self.taken.items()) + (
            "; and the price database's prices" if self.prices_taken else "")

    def close(self) -> None:
        """End the worker: what it has not read is not read."""
        self.pool.shutdown(wait=True, cancel_futures=True)


class PrefetchedReads:
    """One processor's share of a `Prefetch`, in the runner's chunks: ``chunk(n)`` gives, per task of chunk
    ``n``, its read, or None for a file the run reads itself. Entering and leaving change nothing: the
    worker is the prefetch's, ended by `Prefetch.close`."""

    def __init__(self, prefetch: Prefetch, name: str, chunks: list[list[Task]]):
        self.prefetch, self.name, self.chunks = prefetch, name, chunks

    def __enter__(self) -> PrefetchedReads:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def chunk(self, n: int) -> list[WorkerRead | None]:
        return [self.prefetch.take(self.name, task) for task in self.chunks[n]]


def start_prefetch(types: Sequence[type[SessionProcessor]], work: dict[str, list[SessionFile]], state: StateStore,
                   min_bytes: int, max_bytes: int, prices_for: str | None = None) -> Prefetch | None:
    """Start reading the files of ``work`` (per processor name, the files it has work for) that are new to
    their processor, for each of ``types`` that reads in workers, in that order; None when that is not
    ``min_bytes`` to ``max_bytes`` of files, or there is one core. ``prices_for``: the processor whose
    commits price rows; when it has new files, the worker computes the prices before reading them."""
    types = [t for t in types if t.parallel_reads and work.get(t.name)]
    if not types or (os.cpu_count() or 1) < 2:
        return None
    if sum({f.key: f.size for t in types for f in work[t.name]}.values()) < min_bytes:
        return None  # the files with work hold too little, new or not: most runs stop here, without a query
    new: dict[str, list[SessionFile]] = {}
    with state.connect() as conn:
        for t in types:
            known = known_files(conn, t.name)
            new[t.name] = [f for f in work[t.name] if f.key not in known]
    if not min_bytes <= sum({f.key: f.size for files in new.values() for f in files}.values()) <= max_bytes:
        return None
    return Prefetch(types, new, prices_for if new.get(prices_for) else None)


def _read_pickled(processor_type: type[SessionProcessor], files: list[tuple]) -> bytes:
    """In the worker process: `read_files`, pickled here. The pool's thread in the caller then only receives
    bytes, and the reads are unpickled by the run that takes them: while Dagster starts, that thread would
    take Python's lock from it for ~0.3 s (2,000 sessions' memory records)."""
    return pickle.dumps(read_files(processor_type, files), protocol=pickle.HIGHEST_PROTOCOL)
