"""ProvenanceWriteQueue: recall's provenance written behind its back, coalesced, never lost.

Rules (each one tested in ``tests/test_provenance_queue.py``):
- ``enqueue(pairs)`` never waits on a Lance write: it appends under a lock and returns.
- One worker thread coalesces the pairs that arrive within ``coalesce_ms`` of the first one into one
  ``store.append_provenance_batch`` call (one Lance commit), at most ``max_batch_pairs`` per call.
- Per record, entries land in the order they were enqueued.
- The in-memory queue is bounded by items (``max_queue_size``) and bytes (``max_queue_bytes``); a batch
  that does not fit is spilled to a JSONL file in ``overflow_dir`` (created on the first spill), named
  ``<ULID>-<pid>.jsonl``, created exclusively and fsynced. While this queue has spilled files not yet
  reloaded, later batches spill too, so reloading never puts older entries behind newer ones.
- The worker reloads spill files (oldest first; any process's) when idle and whenever the queue is at
  or below the low-water mark, then deletes them. A malformed file is renamed
  ``<name>.failed-<timestamp>.jsonl`` and is never picked up or renamed again.
- A failing write is retried with exponential backoff, then the batch and everything queued after it
  are spilled: never dropped, never raised to the caller.
- Each entry gets its id (a ULID) before the first attempt to write it, and keeps it through retries
  and spill files. A write that raised may still have committed, so a retry, and the write of a
  reloaded spill file of attempted entries, skips the entries whose id already landed: none is
  appended twice. (Not at enqueue: ``os.urandom`` releases the GIL, and getting it back behind the
  worker made enqueue p99 1 ms.)
- A batch is one append to the ``provenance`` table and never touches ``records`` (or its text
  index), so each coalescing window costs exactly one Lance version.
- ``flush(timeout)`` drains the queue and this process's spill files; ``stop()`` drains and ends the
  worker (spilling what cannot be written); ``start()`` registers an atexit handler that stops, so
  interpreter exit loses nothing.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import orjson

from resources.ids import new_ulid

COALESCE_MS = 250
"""Default coalescing window. Under sustained recall the queue commits once per window plus the write,
so the window sets the version count: 1,000 back-to-back recalls at 100,000 records made 133
versions at 50 ms (see ``python -m bench recall``). Nobody waits on it: ``flush`` and exit write at once."""
WORKER_IDLE_POLL_S = 0.5
"""How long the idle worker sleeps before looking for spill files to reload."""
FAILED_WRITE_PAUSE_S = 1.0
"""After a batch could not be written, spill files are left alone this long before the next try."""
PAIR_OVERHEAD_BYTES = 64
_SPILL_NAME = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}-\d+\.jsonl$")

log = logging.getLogger(__name__)


class _Pair(NamedTuple):
    record_id: str
    entry: dict
    size: int
    """Bytes it counts against ``max_queue_bytes``."""
    entry_id: str | None = None
    """Given before the first attempt to write it, kept through retries and spill files."""
    may_have_landed: bool = False
    """Read back from a spill file with its id: an earlier write may have committed before failing."""


class ProvenanceWriteQueue:
    """Write-behind queue of ``(record_id, entry)`` pairs in front of ``store.append_provenance_batch``."""

    def __init__(
        self,
        store,
        coalesce_ms: float = COALESCE_MS,
        max_queue_size: int = 100_000,
        max_batch_pairs: int = 10_000,
        overflow_dir: Path | str | None = None,
        *,
        max_queue_bytes: int = 64 << 20,
        low_water: int | None = None,
        max_retries: int = 3,
        retry_backoff_s: float = 0.05,
    ) -> None:
        if overflow_dir is None:
            from resources.config.settings import Settings

            overflow_dir = Settings.from_env().provenance_overflow_dir
        self.store = store
        self.coalesce_s = max(coalesce_ms, 0) / 1000
        self.max_queue_size = max(int(max_queue_size), 1)
        self.max_queue_bytes = max(int(max_queue_bytes), 1)
        self.max_batch_pairs = max(int(max_batch_pairs), 1)
        self.low_water = self.max_queue_size // 4 if low_water is None else low_water
        self.overflow_dir = Path(overflow_dir)
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.stats = {"enqueued": 0, "written": 0, "batches": 0, "retries": 0, "spilled_files": 0,
                      "spilled_pairs": 0, "reloaded_files": 0, "failed_files": 0}
        self._items: deque[_Pair] = deque()
        self._bytes = 0
        self._own_spills: set[str] = set()
        self._inflight = 0
        self._cond = threading.Condition()
        self._urgent = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._atexit_registered = False
        self._reload_not_before = 0.0

    # -- caller side ----------------------------------------------------------------------------------

    def start(self) -> ProvenanceWriteQueue:
        """Start the worker thread (idempotent) and register the atexit drain."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="provenance-write-queue", daemon=True)
            self._thread.start()
        if not self._atexit_registered:
            atexit.register(self._atexit)
            self._atexit_registered = True
        return self

    def enqueue(self, pairs: Iterable[tuple[str, dict]]) -> None:
        """Queue ``(record_id, entry)`` pairs; returns at once. Spills to disk when the queue is full."""
        items = [_Pair(rid, entry, len(rid) + len(orjson.dumps(entry, default=str)) + PAIR_OVERHEAD_BYTES)
                 for rid, entry in ((str(r), e) for r, e in pairs)]
        if not items:
            return
        size = sum(i.size for i in items)
        with self._cond:
            self.stats["enqueued"] += len(items)
            fits = (len(self._items) + len(items) <= self.max_queue_size
                    and self._bytes + size <= self.max_queue_bytes)
            if fits and not self._own_spills:
                was_empty = not self._items
                self._items.extend(items)
                self._bytes += size
                # wake the worker only when it idles or its batch is full: every needless wake-up
                # is a GIL hand-off that the next caller pays for
                if was_empty or len(self._items) >= self.max_batch_pairs:
                    self._cond.notify_all()
                return
            self._spill_locked(items)

    def pending(self) -> int:
        """Pairs queued in memory plus pairs being written right now."""
        with self._cond:
            return len(self._items) + self._inflight

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything queued (and this process's spill files) now; True when all of it landed."""
        if self._thread is None or not self._thread.is_alive():
            self._drain_here()
            return self._drained()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._urgent += 1
            self._cond.notify_all()
            try:
                while not self._drained_locked():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(min(left, WORKER_IDLE_POLL_S) if left is not None else WORKER_IDLE_POLL_S)
                return True
            finally:
                self._urgent -= 1

    def stop(self, timeout: float | None = None) -> None:
        """Drain what is queued (spilling it if the store cannot take it) and end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                with self._cond:
                    self._spill_locked(self._take_all_locked())
                return
        else:
            self._drain_here()
        with self._cond:
            self._thread = None
        if self._atexit_registered:
            atexit.unregister(self._atexit)
            self._atexit_registered = False

    def _atexit(self) -> None:
        self.stop(timeout=30)

    # -- worker side ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stopping:
                    if self._urgent and self._own_spills and time.monotonic() >= self._reload_not_before:
                        break  # a flush waits on our spill files
                    if not self._cond.wait(WORKER_IDLE_POLL_S) and not self._items:
                        break  # idle: look for spill files
                if not self._items and self._stopping:
                    break
                batch = self._next_batch_locked() if self._items else []
            if batch:
                self._write(batch)
            if self.pending() <= self.low_water:
                self._reload_spills()
        self._drain_here()

    def _next_batch_locked(self) -> list[_Pair]:
        """Wait out the coalescing window (unless full, flushing or stopping), then take one batch."""
        deadline = time.monotonic() + self.coalesce_s
        while (len(self._items) < self.max_batch_pairs and not self._urgent and not self._stopping
               and (left := deadline - time.monotonic()) > 0):
            self._cond.wait(left)
        n = min(len(self._items), self.max_batch_pairs)
        batch = [self._items.popleft() for _ in range(n)]
        self._bytes -= sum(i.size for i in batch)
        self._inflight = n
        return batch

    def _write(self, batch: list[_Pair]) -> bool:
        """Append one batch with retries; on final failure spill it and everything queued after it."""
        batch = [i if i.entry_id else i._replace(entry_id=new_ulid()) for i in batch]
        pairs = [(i.record_id, i.entry) for i in batch]
        entry_ids = [i.entry_id for i in batch]
        delay = self.retry_backoff_s
        for attempt in range(self.max_retries + 1):
            try:
                self.store.append_provenance_batch(
                    pairs, entry_ids, retried=attempt > 0 or any(i.may_have_landed for i in batch))
            except Exception as exc:  # never raised into recall: retried, then spilled
                if attempt == self.max_retries:
                    log.warning("provenance write failed %d times, spilling %d pairs: %s",
                                attempt + 1, len(pairs), exc)
                    break
                with self._cond:
                    self.stats["retries"] += 1
                time.sleep(delay)
                delay *= 2
            else:
                with self._cond:
                    self.stats["written"] += len(pairs)
                    self.stats["batches"] += 1
                    self._inflight = 0
                    self._cond.notify_all()
                return True
        with self._cond:
            self._inflight = 0
            self._reload_not_before = time.monotonic() + FAILED_WRITE_PAUSE_S
            self._spill_locked(batch)
            self._spill_locked(self._take_all_locked())
            self._cond.notify_all()
        return False

    def _take_all_locked(self) -> list[_Pair]:
        items = list(self._items)
        self._items.clear()
        self._bytes = 0
        return items

    def _drain_here(self) -> None:
        """Drain on the calling thread (after the worker ended, or when it never started).

        Writes the queue, then reloads every spill file and writes those too; stops at the first
        batch that cannot be written (it and the rest are spilled by ``_write``).
        """
        reloaded = False
        while True:
            with self._cond:
                batch = None
                if self._items:
                    n = min(len(self._items), self.max_batch_pairs)
                    batch = [self._items.popleft() for _ in range(n)]
                    self._bytes -= sum(i.size for i in batch)
                    self._inflight = n
            if batch is None:
                if reloaded:
                    return
                self._reload_spills(all_files=True)
                reloaded = True
            elif not self._write(batch):
                return

    def _drained(self) -> bool:
        with self._cond:
            return self._drained_locked()

    def _drained_locked(self) -> bool:
        return not self._items and not self._inflight and not self._own_spills

    # -- spill files ----------------------------------------------------------------------------------

    def _spill_locked(self, items: list[_Pair]) -> None:
        """Write ``items`` to a new spill file (exclusive create + fsync). Called with the lock held."""
        if not items:
            return
        body = b"".join(orjson.dumps({"id": i.record_id, "entry": i.entry,
                                      **({"entry_id": i.entry_id} if i.entry_id else {})}, default=str) + b"\n"
                        for i in items)
        try:
            self.overflow_dir.mkdir(parents=True, exist_ok=True)
            name = f"{new_ulid()}-{os.getpid()}.jsonl"
            fd = os.open(self.overflow_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            dir_fd = os.open(self.overflow_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the new name survives a power cut too
            finally:
                os.close(dir_fd)
        except OSError as exc:
            # Disk refused the spill: keep the pairs in memory past the bound rather than drop them.
            log.error("cannot spill %d provenance pairs to %s (%s); keeping them in memory",
                      len(items), self.overflow_dir, exc)
            self._items.extend(items)
            self._bytes += sum(i.size for i in items)
            return
        self._own_spills.add(name)
        self.stats["spilled_files"] += 1
        self.stats["spilled_pairs"] += len(items)

    def spill_files(self) -> list[Path]:
        """Pending spill files (any process), oldest first; quarantined ``*.failed-*`` files excluded."""
        try:
            names = sorted(n for n in os.listdir(self.overflow_dir) if _SPILL_NAME.match(n))
        except FileNotFoundError:
            return []
        return [self.overflow_dir / n for n in names]

    def _reload_spills(self, all_files: bool = False) -> None:
        """Move spill files back into the queue, oldest first, while it stays under its bounds.

        Right after a failed write only an explicit drain (``all_files``) retries them.
        """
        if not all_files and time.monotonic() < self._reload_not_before:
            return
        with self._cond:
            ours_before = set(self._own_spills)
        files = self.spill_files()
        with self._cond:
            # our files that another process already reloaded no longer hold anything back
            self._own_spills -= ours_before - {p.name for p in files}
        for path in files:
            items = self._read_spill(path)
            if items is None:
                continue
            size = sum(i.size for i in items)
            with self._cond:
                room = (not self._items or all_files
                        or (len(self._items) + len(items) <= self.max_queue_size
                            and self._bytes + size <= self.max_queue_bytes))
                if not room:
                    return
                self._items.extend(items)
                self._bytes += size
                try:
                    path.unlink()
                except FileNotFoundError:
                    # another process reloaded it first: take back what we just queued
                    for _ in items:
                        self._items.pop()
                    self._bytes -= size
                    continue
                self._own_spills.discard(path.name)
                self.stats["reloaded_files"] += 1
                self._cond.notify_all()

    def _read_spill(self, path: Path) -> list[_Pair] | None:
        """The pairs of a spill file; a malformed file is quarantined and None returned.

        A line without ``entry_id`` (never attempted, or written before entries had ids) gets one
        when it is written.
        """
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            items = []
            for line in raw.splitlines():
                if not line.strip():
                    continue
                obj = orjson.loads(line)
                rid, entry, entry_id = obj["id"], obj["entry"], obj.get("entry_id")
                if not isinstance(rid, str) or not isinstance(entry, dict) or not isinstance(entry_id, str | None):
                    raise ValueError("pair must be {'id': str, 'entry': object, 'entry_id'?: str}")
                items.append(_Pair(rid, entry, len(line) + PAIR_OVERHEAD_BYTES, entry_id, entry_id is not None))
            return items
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            target = path.with_name(f"{path.stem}.failed-{stamp}.jsonl")
            try:
                path.rename(target)
            except FileNotFoundError:
                return None
            log.error("malformed provenance spill file %s quarantined as %s: %s", path, target.name, exc)
            with self._cond:
                self._own_spills.discard(path.name)
                self.stats["failed_files"] += 1
            return None
