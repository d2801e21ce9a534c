"""Printed reports kept for reuse: a report whose inputs have not changed is printed again without DuckDB.

A report's output depends on the question (the parsed options, the settings, the code and its
dependencies, the price file), on the session files on disk and on the warehouse. `ReportCache` keeps,
per question (`question_key`), the last output (stdout, stderr, exit code) together with the listing
digest (`listing_digest`: every session file's path, size and mtime, as the refresh walked them) and
the warehouse's stat (`warehouse_stat`: size, mtime and inode of the file and of its ``.wal``, or its
absence) it was computed for; `ReportCache.get` returns it only when both are the same again.

The warehouse's stat is taken while the report still holds its connection (no other process can open
the file meanwhile) and after a checkpoint, and the output is stored only if closing the connection
left the stat unchanged: any later writer opens the file afterwards, and its write makes a ``.wal`` and
changes the file's size or mtime (its checkpoint comes at least one DuckDB open, milliseconds, after ours:
longer than the file system's timestamp granularity).

`ReportCache.mark_refreshed` also keeps, beside the entries, the listing and warehouse stat of the last
refresh that read every changed file without error: while both hold, a report of another question can
skip asking the warehouse which files changed (`ReportCache.refreshed_at`).

Entries are JSON files, 0600 in a 0700 folder (``$SESSIONLAKE_HOME/reports/``), written to a temp file
and renamed; only the `KEEP` most recently used are kept. Only the standard library is imported here:
this is the path of a report that finds nothing new.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from _blake2 import blake2b  # hashlib's own blake2b; hashlib itself loads OpenSSL first (3 ms)
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

KEEP = 64
"""How many reports (one per question) are kept."""
FORMAT = 1
"""Part of every question: bump when the entry's layout or meaning changes."""
_LAST_REFRESH = "refreshed.json"


class CachedReport(NamedTuple):
    """What a report printed: its standard output, its standard error and its exit code."""

    stdout: str
    stderr: str
    code: int


def question_key(*parts) -> str:
    """A short digest of ``parts`` (JSON-serializable values, `str` for the rest): the entry's name."""
    text = json.dumps([FORMAT, *parts], sort_keys=True, default=str, separators=(",", ":"))
    return blake2b(text.encode(), digest_size=16).hexdigest()


def listing_digest(files: Sequence) -> str:
    """A digest of session files (objects with ``fspath``, ``size`` and ``mtime_ns``, in walk order): the
    paths as one text, the sizes and times as 64-bit integers (20,000 files: 5 ms, where a line of text per
    file takes 40)."""
    digest = blake2b(digest_size=16)
    digest.update("\n".join([f.fspath for f in files]).encode("utf-8", "surrogateescape"))
    digest.update(array("q", [n for f in files for n in (f.size, f.mtime_ns)]).tobytes())
    return digest.hexdigest()


def file_stat(path: Path | str) -> list[int] | None:
    """``[size, mtime_ns, inode]`` of ``path``, or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def warehouse_stat(path: Path | str) -> list | None:
    """The stat of the warehouse file and of its write-ahead log (None for an absent one)."""
    return [file_stat(path), file_stat(f"{path}.wal")]


def code_stamp(*folders: Path | str) -> list:
    """What changes when the code that makes a report changes: Python's version, the size and mtime of every
    ``.py`` and ``.json`` file under ``folders`` (an edit, an upgrade), and the mtime of each package folder
    of ``sys.path`` (installing or removing any package there, genai-prices and DuckDB among them, changes it;
    the working directory, also on ``sys.path`` under ``python -m``, is left out)."""
    stamp: list = [sys.version]
    for folder in folders:
        _stamp_tree(str(folder), stamp)
    for entry in sys.path:
        if os.path.basename(entry) in ("site-packages", "dist-packages") and (st := file_stat(entry)) is not None:
            stamp.append([entry, st[1]])
    return stamp


def _stamp_tree(folder: str, stamp: list) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.name != "__pycache__":
                _stamp_tree(entry.path, stamp)
        elif entry.name.endswith((".py", ".json")):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            stamp.append([entry.path, st.st_size, st.st_mtime_ns])


class ReportCache:
    """The entries under ``folder`` (see the module doc)."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    def get(self, question: str, listing: str | None, warehouse: list) -> CachedReport | None:
        """The report stored for ``question`` at this ``listing`` digest and ``warehouse`` stat, or None."""
        path = self.folder / f"{question}.json"
        entry = _read(path)
        if entry is None or entry.get("listing") != listing or entry.get("warehouse") != warehouse:
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # most recently used: the last to be dropped
        return CachedReport(entry["stdout"], entry["stderr"], entry["code"])

    def put(self, question: str, listing: str | None, warehouse: list, report: CachedReport) -> None:
        """Store ``report`` for ``question`` at ``listing`` and ``warehouse``; drop the least recently used
        entries beyond `KEEP`."""
        self._write(f"{question}.json", {"listing": listing, "warehouse": warehouse, "stdout": report.stdout,
                                         "stderr": report.stderr, "code": report.code})
        self._prune()

    def refreshed_at(self, listing: str) -> list | None:
        """The warehouse stat stored by `mark_refreshed` for this ``listing`` digest, or None."""
        entry = _read(self.folder / _LAST_REFRESH)
        return entry.get("warehouse") if entry is not None and entry.get("listing") == listing else None

    def mark_refreshed(self, listing: str, warehouse: list) -> None:
        """Every file of ``listing`` is in the warehouse, which has the stat ``warehouse``."""
        if self.refreshed_at(listing) != warehouse:
            self._write(_LAST_REFRESH, {"listing": listing, "warehouse": warehouse})

    def _write(self, name: str, entry: dict) -> None:
        """Write an entry (a temp file, renamed); one that cannot be written (a full disk, a read-only home)
        is not kept, and the report it belongs to is printed all the same."""
        path = self.folder / name
        temp = path.with_name(f".{name}.{os.getpid()}.tmp")
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.folder, 0o700)
            with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                f.write(json.dumps(entry).encode())
            os.replace(temp, path)
        except OSError:
            with contextlib.suppress(OSError):
                temp.unlink()

    def _prune(self) -> None:
        try:
            entries = [e for e in os.scandir(self.folder) if e.name.endswith(".json") and e.name != _LAST_REFRESH]
            if len(entries) <= KEEP:
                return
            entries.sort(key=lambda e: e.stat().st_mtime_ns, reverse=True)
            for entry in entries[KEEP:]:
                os.unlink(entry.path)
        except OSError:  # another report pruned it first
            pass


def _read(path: Path) -> dict | None:
    try:
        entry = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) else None
