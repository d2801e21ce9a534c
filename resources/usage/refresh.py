"""Reports read their own writes: the usage warehouse is brought up to date from disk before a report.

`fresh_warehouse` is what ``sessionlake usage`` and ``sessionlake statusline`` open. It walks every
agent's folder, asks the warehouse which files the usage processor has not processed at their current
size and mtime (one query for the stored sizes and times, compared in Python), reads only those with
the usage processor through the runner (from the stored offset for a file that grew), commits, and hands
the same connection to the report; a report that finds nothing new never imports the runner. No Dagster
run and no Lance table are involved: memory and archive catch up in the next sensor run or ``sessionlake
ingest``, which finds usage already current.

A large read (a first report on a home with months of sessions) runs in worker processes, one per
core, with a progress line on stderr when stderr is a terminal; a few changed files are read in the
report's own connection. The report holds that connection through a large read too: the runner's
connections then share its database (DuckDB keeps one per file in a process), so none of them opens
the file again or checkpoints when it closes, and an ingest run waits for the whole read instead of
taking the warehouse between two chunks of it.

A report never fails or hangs because another process (an ingest run) holds the warehouse: after
``lock_wait_sec`` it reads a copy of the stored file instead, and says on stderr how old that is.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import duckdb

from resources.config.settings import Settings
from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.session_files import SessionFile
from resources.sources import found_sources, walk_all
from resources.state.store import Connection, StateStore, fetch_one, is_lock_conflict, migrate, unstable_files
from resources.usage.pricing import PriceTable
from resources.usage.report_cache import warehouse_stat

REPORT_LOCK_WAIT_SEC = 5.0
"""How long a report waits for a warehouse another process holds before it reports from a copy."""
PARALLEL_READ_BYTES = 16 << 20
"""Changed bytes above which files are read in worker processes (below, starting them costs more)."""
MAX_WORKERS = 8
PROGRESS_AFTER_SEC = 0.5
"""A read that takes longer than this shows its progress on a terminal."""


@dataclass
class FreshWarehouse:
    """The connection a report reads, and what bringing it up to date did."""

    conn: Connection
    files_read: int = 0
    """Files the usage processor read for this report."""
    errors: list[dict] | None = None
    """``[{file, error}]``: files that could not be read (left unmarked: the next report or ingest retries them)."""
    stored_at: datetime | None = None
    """Set when the warehouse was held by another process: the report reads a copy, as stored at this time
    (None there too when nothing was ever stored)."""
    held: bool = False
    path: Path | None = None
    """The warehouse file the connection holds (None for a copy)."""

    def settled_stat(self) -> list | None:
        """The warehouse's `warehouse_stat` while this connection holds it, after a checkpoint of what it wrote
        (so closing it writes nothing more); None for a copy of a held warehouse."""
        if self.held or self.path is None:
            return None
        if os.path.exists(f"{self.path}.wal"):
            self.conn.execute("CHECKPOINT")
        return warehouse_stat(self.path)


@contextlib.contextmanager
def fresh_warehouse(settings: Settings, *, refresh: bool = True, lock_wait_sec: float = REPORT_LOCK_WAIT_SEC,
                    prices: PriceTable | None = None, command: str = "sessionlake", stderr: TextIO | None = None,
                    files: list[SessionFile] | None = None,
                    refreshed_at: list | None = None) -> Iterator[FreshWarehouse]:
    """A connection to the usage warehouse, first brought up to date from disk (not with ``refresh=False``).

    ``files``: the session files, when the caller has walked them already. ``refreshed_at``: the
    `warehouse_stat` the warehouse had when every one of ``files`` was last read in; while the
    warehouse still has it, nothing is asked of it (the processor state is not read).

    File errors and a held warehouse are said on ``stderr`` (default ``sys.stderr``), one line each,
    prefixed with ``command``; the caller decides the exit status from `FreshWarehouse.errors`.
    """
    stderr = stderr or sys.stderr
    store = StateStore(settings.state_path, lock_wait_sec=lock_wait_sec)
    with contextlib.ExitStack() as stack:
        try:
            fresh = stack.enter_context(_refreshed(store, settings, refresh, prices, stderr, files, refreshed_at))
        except duckdb.Error as exc:
            if not is_lock_conflict(exc):
                raise
            conn = stack.enter_context(_stored_copy(settings))
            fresh = FreshWarehouse(conn, stored_at=_last_refresh(conn), held=True)
            print(f"{command}: {_held_note(fresh.stored_at)}", file=stderr)
        for error in fresh.errors or []:
            print(f"{command}: {error['file']}: {error['error']} (retried next time)", file=stderr)
        yield fresh


@contextlib.contextmanager
def _refreshed(store: StateStore, settings: Settings, refresh: bool, prices: PriceTable | None,
               stderr: TextIO, files: list[SessionFile] | None,
               refreshed_at: list | None) -> Iterator[FreshWarehouse]:
    """Refresh and yield the connection; raises DuckDB's lock conflict (before yielding) when held."""
    stale: list[SessionFile] = []
    with store.connect() as conn:
        if refresh and (refreshed_at is None or warehouse_stat(store.path) != refreshed_at):
            files = list(walk_all(found_sources(settings))) if files is None else files
            stale = unstable_files(conn, UsageProcessor.name, files)
        if not stale:
            yield _outcome(conn, None, store.path)
            return
        # only now: a report that finds nothing new never loads the runner and its worker pool
        from resources.ingest.runner import run_processors, top_up_files

        if sum(f.size for f in stale) <= PARALLEL_READ_BYTES:
            yield _outcome(conn, top_up_files(UsageProcessor(prices or PriceTable.load(settings.price_file)),
                                              stale, conn), store.path)
            return
        # Each commit of the read checkpoints instead of writing the write-ahead log: the report checkpoints before
        # it prints anyway (`settled_stat`), so the log's copy of every row (10 MB for 2,000 sessions) was written
        # and synced for nothing, and the files seen, committed while the workers read, are settled then too.
        conn.execute("SET checkpoint_threshold = '0KB'")
        try:
            with _ProgressLine(stderr, sum(f.size for f in stale)) as progress:
                stats = run_processors([UsageProcessor(prices or PriceTable.load(settings.price_file))],
                                       settings.sessions_dir, store, files=stale, workers=_workers(), progress=progress)
        finally:
            conn.execute("RESET checkpoint_threshold")
        yield _outcome(conn, stats["usage"], store.path)


def _outcome(conn: Connection, stats: dict | None, path: Path) -> FreshWarehouse:
    if stats is None:
        return FreshWarehouse(conn, path=path)
    return FreshWarehouse(conn, files_read=stats["processed"], errors=stats["error_files"], path=path)


def _workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@contextlib.contextmanager
def _stored_copy(settings: Settings) -> Iterator[Connection]:
    """A connection to a copy of the warehouse file (and its write-ahead log) as it is on disk now.

    DuckDB lets no other process open a file that one holds, not even to read; the copy shows what was
    committed, and is deleted afterwards."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="sessionlake-report-")
    try:
        copy = os.path.join(folder, "state.duckdb")
        if settings.state_path.exists():
            shutil.copyfile(settings.state_path, copy)
            wal = settings.state_path.with_name(settings.state_path.name + ".wal")
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(wal, copy + ".wal")
        conn = duckdb.connect(copy)
        try:
            migrate(conn)  # a warehouse of an older version, or none yet: the report needs the tables
            yield conn
        finally:
            conn.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _last_refresh(conn: Connection) -> datetime | None:
    """When the usage processor last marked a file: how current the stored usage is."""
    row = fetch_one(conn, "SELECT max(processed_at) FROM session_processor_state WHERE processor_name = ?",
                    [UsageProcessor.name])
    return row[0] if row else None


def _held_note(stored_at: datetime | None) -> str:
    if stored_at is None:
        return "the warehouse is held by another process (an ingest run?) and held no usage when it was taken"
    age = (datetime.now(UTC) - stored_at).total_seconds()
    return (f"the warehouse is held by another process (an ingest run?); this is the usage stored {_ago(age)} "
            f"ago ({stored_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC), without newer activity")


def _ago(seconds: float) -> str:
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''}"
    return f"{max(int(seconds), 0)} s"


class _ProgressLine:
    """``progress`` for the runner: one line on a terminal, rewritten in place (files and MB done, rate),
    shown only once a read has taken `PROGRESS_AFTER_SEC`; nothing when the stream is not a terminal."""

    def __init__(self, stream: TextIO, total_bytes: int):
        self.stream = stream
        self.total_bytes = total_bytes
        self.started = time.monotonic()
        self.shown_at = 0.0
        self.width = 0
        self.on = _isatty(stream)

    def __enter__(self) -> Callable[[int, int, int], None] | None:
        return self if self.on else None

    def __exit__(self, *exc) -> None:
        if self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()

    def __call__(self, files_done: int, files_total: int, bytes_done: int) -> None:
        now = time.monotonic()
        if now - self.started < PROGRESS_AFTER_SEC or (now - self.shown_at < 0.1 and files_done < files_total):
            return
        self.shown_at = now
        rate = bytes_done / 1e6 / max(now - self.started, 1e-6)
        text = (f"reading sessions: {files_done:,}/{files_total:,} files, "
                f"{bytes_done / 1e6:,.1f}/{self.total_bytes / 1e6:,.1f} MB, {rate:,.0f} MB/s")
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = max(self.width, len(text))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
