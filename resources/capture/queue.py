"""The capture inbox: a durable file queue that live producers append to and a sensor drains.

Contract:
- ``append(record)`` publishes ``pending-<ULID>.json`` holding the envelope ``{ulid, appended_at,
  schema_version, record}`` atomically (temp file, fsync, ``os.replace``, fsync of the folder) and
  returns the ULID. When ``append`` returns, the record survives a power cut; when it raises, nothing
  was published. It never lists the folder, so it costs the same at any queue depth.
- Files are 0600 in 0700 folders. A record that is not a JSON object of str keys, not JSON
  serialisable (NaN, lone surrogates, sets...) or over ``max_record_bytes`` is refused with
  `CaptureRecordError` before anything is written. Text is stored as UTF-8 and survives byte for byte.
- Overflow: after an append that leaves more than ``max_size`` pending, the oldest envelopes are moved
  to ``overflow/`` (never deleted) until ``max_size`` remain, each with a JSONL line in
  ``.overflow-audit.log``; ``requeue_overflow()`` moves them back. Envelopes being ingested (lock file
  present) are not moved.
- ``ingest_batches(handler, batch_size)`` / ``ingest_pending(handler)`` drain oldest first. Each
  envelope is claimed with a non-blocking ``flock`` on ``pending-<ULID>.lock`` (held elsewhere:
  skipped). Unparseable envelopes go to ``corrupt/`` with a line in ``.corrupt-audit.log``;
  envelopes of another ``schema_version`` stay in place, the rest is drained, and the call then
  raises `CaptureQueueSchemaError`. On handler success the pending file, then the lock file, are
  deleted; if the handler raises both stay (the lock marks a crash mid-flight), the error propagates
  and the next call retries them. Delivery is at least once: consumers key rows on the ULID.

The depth is tracked in ``.depth`` (a counter updated under ``flock``) so ``append`` can tell when
to prune without listing; every ingest recounts it. Appenders hold ``.append.lock`` shared while they
publish, so a recount (exclusive) never races a publish that has not been counted yet. File names,
durable-write and flock helpers live in ``resources/capture/files.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from resources.capture.files import (
    LOCK_SUFFIX,
    PENDING_PREFIX,
    PENDING_SUFFIX,
    TEMP_PREFIX,
    Claim,
    append_jsonl,
    claimable_files,
    flocked,
    fsync_dir,
    is_pending_name,
    now_iso,
    ulid_or_none,
    write_all,
)
from resources.ids import new_ulid as generate_ulid

SCHEMA_VERSION = 1
DEFAULT_MAX_SIZE = 10_000
DEFAULT_MAX_RECORD_BYTES = 1 << 20
DEFAULT_BATCH_SIZE = 2000
MAX_BATCH_BYTES = 64 << 20
"""A batch is handed over at ``batch_size`` envelopes or this many bytes, whichever comes first."""
STALE_TEMP_SEC = 3600.0
"""A temp file this old belongs to a writer that died before publishing; ingest removes it."""

OVERFLOW_DIR = "overflow"
CORRUPT_DIR = "corrupt"
OVERFLOW_AUDIT_LOG = ".overflow-audit.log"
CORRUPT_AUDIT_LOG = ".corrupt-audit.log"
_DEPTH_FILE = ".depth"
_APPEND_LOCK = ".append.lock"
_CANDIDATES_FILE = ".overflow-candidates"
_CANDIDATES_PER_SCAN = 1024


class CaptureQueueError(Exception):
    """Base class for capture-queue errors."""


class CaptureRecordError(CaptureQueueError, ValueError):
    """A record was refused before anything was written (not an object, not serialisable, too big)."""


class CaptureQueueSchemaError(CaptureQueueError):
    """Envelopes of an unknown ``schema_version`` were left in place (the rest was drained)."""


@dataclass(frozen=True)
class Envelope:
    """One queued record as the drain sees it."""

    ulid: str
    appended_at: str
    record: dict


class CaptureQueue:
    """The inbox folder ``queue_dir``; see the module docstring for the contract."""

    def __init__(self, queue_dir: str | os.PathLike, max_size: int = DEFAULT_MAX_SIZE,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        if max_record_bytes < 1:
            raise ValueError(f"max_record_bytes must be at least 1, got {max_record_bytes}")
        self.dir = Path(queue_dir)
        self.max_size = max_size
        self.max_record_bytes = max_record_bytes
        self.overflow_dir = self.dir / OVERFLOW_DIR
        self.corrupt_dir = self.dir / CORRUPT_DIR
        self.overflow_audit_log = self.dir / OVERFLOW_AUDIT_LOG
        self.corrupt_audit_log = self.dir / CORRUPT_AUDIT_LOG
        self._ready = False

    @classmethod
    def from_settings(cls, settings) -> CaptureQueue:
        return cls(settings.capture_dir, max_size=settings.capture_max_size,
                   max_record_bytes=settings.capture_max_record_bytes)

    def _ensure_dirs(self) -> None:
        if not self._ready:
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            for folder in (self.dir, self.overflow_dir, self.corrupt_dir):
                folder.mkdir(mode=0o700, exist_ok=True)
            self._ready = True
            if not (self.dir / _DEPTH_FILE).exists():
                self._recount()

    # -- producing --------------------------------------------------------------------------------

    def encode_record(self, record: dict) -> bytes:
        """The record's UTF-8 JSON, or `CaptureRecordError` saying why it cannot be queued."""
        if not isinstance(record, dict):
            raise CaptureRecordError(f"a capture record must be a JSON object, got {type(record).__name__}")
        try:
            data = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise CaptureRecordError(f"record is not JSON-serialisable: {exc}") from None
        if len(data) > self.max_record_bytes:
            raise CaptureRecordError(
                f"record is {len(data):,} bytes, over the {self.max_record_bytes:,}-byte limit")
        return data

    def append(self, record: dict) -> str:
        """Durably publish ``record`` and return its ULID (see the module docstring)."""
        data = self.encode_record(record)
        self._ensure_dirs()
        with flocked(self.dir / _APPEND_LOCK, fcntl.LOCK_SH):
            ulid = generate_ulid()
            envelope = b'{"ulid":"%s","appended_at":"%s","schema_version":%d,"record":%s}' % (
                ulid.encode(), now_iso().encode(), SCHEMA_VERSION, data)
            temp = self.dir / f"{TEMP_PREFIX}{ulid}{PENDING_SUFFIX}"
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    write_all(fd, envelope)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temp, self._pending_path(ulid))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
                raise
            fsync_dir(self.dir)
            with flocked(self.dir / _DEPTH_FILE, fcntl.LOCK_EX) as depth_fd:
                depth = self._read_depth(depth_fd) + 1
                if depth > self.max_size:
                    depth = self._prune(depth)
                self._write_depth(depth_fd, depth)
        return ulid

    # -- inspecting -------------------------------------------------------------------------------

    def _pending_path(self, ulid: str) -> Path:
        return self.dir / f"{PENDING_PREFIX}{ulid}{PENDING_SUFFIX}"

    def _pending_names(self, folder: Path | None = None) -> list[str]:
        try:
            with os.scandir(folder or self.dir) as entries:
                return [e.name for e in entries if is_pending_name(e.name)]
        except FileNotFoundError:
            return []

    def pending_count(self) -> int:
        """How many envelopes are pending now (lists the folder)."""
        return len(self._pending_names())

    def list_pending(self) -> list[Path]:
        """Pending envelope paths, oldest first (ULID order is append order)."""
        return [self.dir / name for name in sorted(self._pending_names())]

    def list_overflow(self) -> list[Path]:
        """Envelopes moved out by overflow, oldest first."""
        return [self.overflow_dir / name for name in sorted(self._pending_names(self.overflow_dir))]

    # -- depth counter and overflow ---------------------------------------------------------------

    @staticmethod
    def _read_depth(fd: int) -> int:
        # Unreadable counts as 0: a low count only delays pruning until the next recount.
        raw = os.pread(fd, 32, 0).strip()
        return int(raw) if raw.isdigit() else 0

    @staticmethod
    def _write_depth(fd: int, depth: int) -> None:
        os.pwrite(fd, b"%020d\n" % max(depth, 0), 0)

    def _prune(self, depth: int) -> int:
        """Move the oldest envelopes to overflow/ until ``max_size`` remain; return the new depth.

        Called with the depth lock held. The oldest names come from ``.overflow-candidates`` (one
        listing serves up to 1,024 prunes), so a full queue does not list the folder on every append.
        """
        candidates_file = self.dir / _CANDIDATES_FILE
        try:
            candidates = candidates_file.read_text().split()
        except FileNotFoundError:
            candidates = []
        moved: list[tuple[str, int]] = []
        rescanned = False
        while depth > self.max_size:
            if not candidates:
                if rescanned:
                    break  # every old envelope is in flight; the next ingest removes them
                names = sorted(self._pending_names())[:_CANDIDATES_PER_SCAN]
                candidates = [name[len(PENDING_PREFIX):-len(PENDING_SUFFIX)] for name in names]
                rescanned = True
                continue
            ulid = candidates.pop(0)
            source = self._pending_path(ulid)
            if source.with_suffix(LOCK_SUFFIX).exists():
                continue
            try:
                os.replace(source, self.overflow_dir / source.name)
            except FileNotFoundError:
                continue  # drained meanwhile
            moved.append((ulid, depth))
            depth -= 1
        candidates_file.write_text("\n".join(candidates))
        if moved:
            fsync_dir(self.overflow_dir)
            fsync_dir(self.dir)
            append_jsonl(self.overflow_audit_log, [
                {"reason": "queue_overflow", "dropped_ulid": ulid, "queue_size_before_prune": before,
                 "max_size": self.max_size, "moved_to": OVERFLOW_DIR, "ts": now_iso()}
                for ulid, before in moved])
        return depth

    def _recount(self) -> int:
        """Reset the depth counter to the real count, with no publish in flight."""
        self._ensure_dirs()
        with flocked(self.dir / _APPEND_LOCK, fcntl.LOCK_EX), \
                flocked(self.dir / _DEPTH_FILE, fcntl.LOCK_EX) as depth_fd:
            depth = self.pending_count()
            self._write_depth(depth_fd, depth)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.dir / _CANDIDATES_FILE)
        return depth

    def _adjust_depth(self, delta: int) -> None:
        with flocked(self.dir / _DEPTH_FILE, fcntl.LOCK_EX) as depth_fd:
            self._write_depth(depth_fd, self._read_depth(depth_fd) + delta)

    def requeue_overflow(self) -> int:
        """Move every overflowed envelope back into the queue; return how many moved.

        Nothing is pruned here: if the queue is still over ``max_size``, the next append prunes the
        oldest again, so drain before requeueing.
        """
        names = self._pending_names(self.overflow_dir)
        for name in names:
            os.replace(self.overflow_dir / name, self.dir / name)
        if names:
            fsync_dir(self.dir)
            fsync_dir(self.overflow_dir)
            self._recount()
        return len(names)

    # -- draining ---------------------------------------------------------------------------------

    def ingest_pending(self, handler: Callable[[dict], object]) -> int:
        """Hand each pending record to ``handler(record)``, oldest first; return how many succeeded."""
        return self.ingest_batches(lambda batch: handler(batch[0].record), batch_size=1)

    def ingest_batches(self, handler: Callable[[list[Envelope]], object],
                       batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Hand pending envelopes to ``handler`` in lists of up to ``batch_size``, oldest first.

        A batch is also handed over once it holds ``MAX_BATCH_BYTES``, and never holds more envelopes
        than the process may keep lock files open. The handler runs on a worker thread, one batch at
        a time and in order, while this thread claims and reads the next batch and deletes the files
        of the previous one, so a Lance commit and the file work overlap. Returns how many envelopes
        were handled and removed. See the module docstring for locking, corrupt and schema rules.
        """
        from concurrent.futures import ThreadPoolExecutor  # ~10 ms to import; appenders never drain

        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._sweep_leftovers()
        mismatched: list[tuple[str, object]] = []
        batch_size = min(batch_size, claimable_files() // 2)  # two batches hold their locks at once
        batch: list[tuple[Claim, Envelope]] = []
        inflight = None  # (batch, Future) while the worker runs the handler on it
        batch_bytes = done = 0
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="capture-drain") as worker:
                for name in [*sorted(self._pending_names()), None]:
                    if name is not None:
                        claim = self._claim(name)
                        envelope, size = self._read_claimed(claim, mismatched) if claim else (None, 0)
                        if envelope is None:
                            continue
                        batch.append((claim, envelope))
                        batch_bytes += size
                        if len(batch) < batch_size and batch_bytes < MAX_BATCH_BYTES:
                            continue
                    if inflight is not None:
                        inflight[1].result()  # the handler's exception propagates from here
                    previous, inflight = inflight, None
                    if batch:
                        inflight = (batch, worker.submit(handler, [envelope for _, envelope in batch]))
                    batch, batch_bytes = [], 0
                    if previous is not None:
                        done += self._remove(previous[0])
        finally:  # the worker is idle here: release what was not finished, keep what was committed
            for claim, _ in batch:  # claimed but never handed to the handler: no crash marker needed
                claim.release(remove_lock=True)
            if inflight is not None:
                if inflight[1].exception() is None:
                    done += self._remove(inflight[0])
                else:
                    for claim, _ in inflight[0]:
                        claim.release(remove_lock=False)
            if self.dir.exists():
                self._recount()
        if mismatched:
            first, found = mismatched[0]
            raise CaptureQueueSchemaError(
                f"{len(mismatched)} capture envelope(s) have schema_version {found!r} but this version of "
                f"sessionlake reads schema_version {SCHEMA_VERSION}; left in place, first: {first}")
        return done

    def _claim(self, name: str) -> Claim | None:
        """Lock ``name``'s lock file without blocking; None when another process holds it."""
        folder = str(self.dir)
        fd = os.open(os.path.join(folder, name[:-len(PENDING_SUFFIX)] + LOCK_SUFFIX),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return Claim(folder, name, fd)

    def _read_claimed(self, claim: Claim, mismatched: list) -> tuple[Envelope | None, int]:
        """The claimed envelope and its size; (None, 0) after dealing with a gone, corrupt or foreign file."""
        ulid = ulid_or_none(claim.name)
        if ulid is None:  # pending-<26 characters>.json that no sessionlake wrote: set aside, unread
            foreign = claim.name[len(PENDING_PREFIX):-len(PENDING_SUFFIX)]
            self._quarantine(claim, foreign, "file name is not pending-<ULID>.json: not written by sessionlake")
            return None, 0
        try:
            fd = os.open(claim.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # finished or moved by another process between listing and locking
            claim.release(remove_lock=True)
            return None, 0
        try:  # most envelopes fit one 64 KiB read; a short read of a regular file means end of file
            raw = chunk = os.read(fd, 1 << 16)
            while len(chunk) == 1 << 16:
                chunk = os.read(fd, 1 << 16)
                raw += chunk
        finally:
            os.close(fd)
        try:
            obj = json.loads(raw)
        except ValueError as exc:  # bad JSON or bad UTF-8
            self._quarantine(claim, ulid, f"invalid JSON: {exc}")
            return None, 0
        if not isinstance(obj, dict):
            self._quarantine(claim, ulid, f"envelope is a JSON {type(obj).__name__}, not an object")
            return None, 0
        if obj.get("schema_version") != SCHEMA_VERSION:
            mismatched.append((claim.name, obj.get("schema_version")))
            claim.release(remove_lock=True)
            return None, 0
        if not isinstance(obj.get("record"), dict):
            self._quarantine(claim, ulid, "envelope has no record object")
            return None, 0
        return Envelope(ulid=ulid, appended_at=str(obj.get("appended_at") or ""), record=obj["record"]), len(raw)

    def _quarantine(self, claim: Claim, ulid: str, reason: str) -> None:
        self._adjust_depth(-1)  # before the move: a crash in between leaves the count low, never high
        os.replace(claim.path, self.corrupt_dir / claim.name)
        fsync_dir(self.dir)
        append_jsonl(self.corrupt_audit_log, [{"reason": "corrupt_envelope", "ulid": ulid, "error": reason,
                                              "moved_to": CORRUPT_DIR, "ts": now_iso()}])
        claim.release(remove_lock=True)

    def _remove(self, batch: list[tuple[Claim, Envelope]]) -> int:
        """Delete the files of a batch its handler finished: each pending file, then its lock file.

        No folder fsync: a deletion lost to a power cut only means the envelope is ingested again.
        """
        self._adjust_depth(-len(batch))
        try:
            for claim, _ in batch:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(claim.path)
        finally:
            for claim, _ in batch:
                claim.release(remove_lock=True)
        return len(batch)

    def _sweep_leftovers(self) -> None:
        """Remove temp files of writers that died before publishing, and lock files whose envelope is gone."""
        cutoff = time.time() - STALE_TEMP_SEC
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        names = {entry.name for entry in entries}
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
            elif (entry.name.startswith(PENDING_PREFIX) and entry.name.endswith(LOCK_SUFFIX)
                  and entry.name[:-len(LOCK_SUFFIX)] + PENDING_SUFFIX not in names):
                claim = self._claim(entry.name[:-len(LOCK_SUFFIX)] + PENDING_SUFFIX)
                if claim is not None:  # keep it if the envelope reappeared meanwhile (requeued)
                    claim.release(remove_lock=not os.path.exists(claim.path))
