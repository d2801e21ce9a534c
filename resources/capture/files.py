"""File primitives of the capture inbox: queue file names, durable writes, flock helpers, claims.

Standard library only: ``sessionlake capture`` imports this on the hot path of every prompt.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

PENDING_PREFIX = "pending-"
PENDING_SUFFIX = ".json"
LOCK_SUFFIX = ".lock"
TEMP_PREFIX = ".tmp-"
_ULID_LEN = 26
_ULID_CHARS = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def ulid_or_none(path: str | os.PathLike) -> str | None:
    """The ULID in a ``pending-<ULID>.json`` (or ``.lock``) file name, or None for any other name."""
    name = os.path.basename(os.fspath(path))
    for suffix in (PENDING_SUFFIX, LOCK_SUFFIX):
        if name.startswith(PENDING_PREFIX) and name.endswith(suffix):
            ulid = name[len(PENDING_PREFIX):-len(suffix)]
            if len(ulid) == _ULID_LEN and _ULID_CHARS.issuperset(ulid):
                return ulid
    return None


def is_pending_name(name: str) -> bool:
    """A name shaped like ``pending-<26 characters>.json``. Its middle need not be a valid ULID: the drain
    sets such foreign files aside in ``corrupt/`` instead of leaving them in the inbox."""
    return (name.startswith(PENDING_PREFIX) and name.endswith(PENDING_SUFFIX)
            and len(name) == len(PENDING_PREFIX) + _ULID_LEN + len(PENDING_SUFFIX))


def now_iso() -> str:
    """The current UTC time as ISO-8601 with milliseconds (without importing datetime: hot path)."""
    now_ms = time.time_ns() // 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_ms // 1000)) + f".{now_ms % 1000:03d}+00:00"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@contextlib.contextmanager
def flocked(path: Path, mode: int) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)


class Claim:
    """An exclusive flock on ``pending-<ULID>.lock``, held while the envelope is in flight.

    Paths are plain strings: the drain handles thousands per second and pathlib costs show up.
    """

    __slots__ = ("fd", "lock_path", "name", "path")

    def __init__(self, folder: str, name: str, fd: int) -> None:
        self.name, self.fd = name, fd
        self.path = os.path.join(folder, name)
        self.lock_path = self.path[:-len(PENDING_SUFFIX)] + LOCK_SUFFIX

    def release(self, *, remove_lock: bool) -> None:
        if remove_lock:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.lock_path)
        os.close(self.fd)


def claimable_files() -> int:
    """How many lock files a batch may hold open: the soft fd limit (raised to the hard one) minus slack."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            target = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
            soft = max(soft, target)
    return max(1, soft - 256)


def append_jsonl(log: Path, entries: list[dict]) -> None:
    """Append one JSON line per entry to ``log`` (0600) and fsync it."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
