"""Reading a sessions tree: walk, stat, hash, and stream JSONL line by line with byte offsets.

Files can be hundreds of MB and may be appended to while we read, so nothing here reads a whole
file into one string: lines are streamed, and a final line without its newline that does not parse
yet is left for the next read (the writer is probably mid-line).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

TAIL_FINGERPRINT_BYTES = 4096
"""How many bytes before a stored offset are re-read to tell an appended file from a rewritten one."""
PREVIEW_BYTES = 200
READ_BUFFER_BYTES = 1 << 16
"""`iter_jsonl` reads a file through a buffer this large, not Python's 8 KiB: a transcript of 60 KB then takes a
read call or two instead of eight, and iterating 2,000 sessions' lines (117 MB) costs 0.13 s of CPU, not 0.18."""


class SessionFile(NamedTuple):
    """One transcript on disk. ``key`` is the POSIX path relative to the root; ``project`` its first part.

    ``fspath`` is the absolute path as a string: walking 100,000 files must not build 100,000
    `Path` objects when most of them are only stat-ed.
    """

    key: str
    fspath: str
    project: str
    size: int
    mtime_ns: int

    @property
    def path(self) -> Path:
        return Path(self.fspath)

    @contextmanager
    def opened(self, start_offset: int = 0) -> Iterator[Path]:
        """The path a processor reads (`resources.ingest.runner` reads every file through this): the file
        itself. An archived version (resources/team/ingest.py) writes a scratch copy instead."""
        yield self.path

    def tail(self, end_offset: int) -> str | None:
        """`tail_fingerprint` before ``end_offset``, kept to tell a later append from a rewrite (None: none)."""
        try:
            return tail_fingerprint(self.fspath, end_offset) if end_offset > 0 else None
        except OSError:
            return None


def session_file_at(sessions_root: Path | str, path: Path | str) -> SessionFile | None:
    """The `SessionFile` for ``path`` if it is a ``.jsonl`` file under ``<root>/<project>/``, else None."""
    root, path = Path(sessions_root).resolve(), Path(path).resolve()
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    if len(rel.parts) < 2 or path.suffix != ".jsonl":
        return None
    st = os.stat(path)
    return SessionFile(rel.as_posix(), str(path), rel.parts[0], st.st_size, st.st_mtime_ns)


def walk_sessions(root: Path | str, projects: set[str] | None = None) -> Iterator[SessionFile]:
    """Yield every regular ``*.jsonl`` file under ``root/<project>/``, recursively.

    Top-level entries that are not directories are skipped, symlinks are never followed (so nothing
    outside the root is read), and only ``projects`` are walked when given. A missing root yields
    nothing; a directory that vanishes or cannot be listed mid-walk is skipped.
    """
    root = Path(root)
    try:
        top = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in sorted(top, key=attrgetter("name")):
        if not entry.is_dir(follow_symlinks=False):
            continue
        if projects is not None and entry.name not in projects:
            continue
        yield from _walk_dir(entry.path, entry.name, entry.name)


def _walk_dir(directory: str, project: str, rel: str) -> Iterator[SessionFile]:
    try:
        entries = sorted(os.scandir(directory), key=attrgetter("name"))
    except OSError:
        return
    for entry in entries:
        entry_rel = f"{rel}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_dir(entry.path, project, entry_rel)
        elif entry.name.endswith(".jsonl"):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield SessionFile(entry_rel, entry.path, project, st.st_size, st.st_mtime_ns)


def project_fingerprints(files: Iterable[SessionFile]) -> dict[str, str]:
    """Per project, a digest of every file's (key, size, mtime_ns): what the session sensor compares, and
    the data version of the project's ``session_files`` partition (stats only: the walk reads no file but
    a new Codex rollout's first line, once, for its project)."""
    import hashlib  # here, as in the functions below: walking a tree (a stored report's check) hashes nothing

    entries: dict[str, list[str]] = {}
    for f in files:
        entries.setdefault(f.project, []).append(f"{f.key}\0{f.size}\0{f.mtime_ns}")
    return {
        project: hashlib.blake2b("\n".join(lines).encode(), digest_size=12).hexdigest()
        for project, lines in entries.items()
    }


def compute_file_hash(path: Path | str, size: int | None = None) -> str:
    """SHA-256 of the file's bytes (its first ``size`` bytes when given), hex. Streams; content-based.

    Hashing exactly the size that was stat-ed keeps the hash consistent with that size while the
    file keeps growing under us.
    """
    import hashlib

    with open(path, "rb") as f:
        if size is None:
            return hashlib.file_digest(f, "sha256").hexdigest()
        digest = hashlib.sha256()
        remaining = size
        while remaining > 0 and (chunk := f.read(min(remaining, 1 << 20))):
            digest.update(chunk)
            remaining -= len(chunk)
        return digest.hexdigest()


def tail_fingerprint(path: Path | str, offset: int) -> str | None:
    """SHA-256 of the up-to-4 KiB just before ``offset``; None when the file is shorter than that."""
    import hashlib

    start = max(0, offset - TAIL_FINGERPRINT_BYTES)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(offset - start)
    if len(data) != offset - start:
        return None
    return hashlib.sha256(data).hexdigest()


class MalformedLine(NamedTuple):
    byte_offset: int
    length: int
    error: str
    preview: str


class ParseStats:
    """What a read saw: lines yielded, blank and malformed lines skipped, bytes consumed. (A plain class: this
    module is on the path of a stored report's check, which loads no ``dataclasses``.)"""

    __slots__ = ("lines", "blank", "malformed", "bytes_read", "end_offset")

    def __init__(self, lines: int = 0, blank: int = 0, malformed: list[MalformedLine] | None = None,
                 bytes_read: int = 0, end_offset: int = 0):
        self.lines = lines
        self.blank = blank
        self.malformed: list[MalformedLine] = [] if malformed is None else malformed
        self.bytes_read = bytes_read
        self.end_offset = end_offset

    def __repr__(self) -> str:
        return (f"ParseStats(lines={self.lines}, blank={self.blank}, malformed={self.malformed!r}, "
                f"bytes_read={self.bytes_read}, end_offset={self.end_offset})")

    @property
    def malformed_count(self) -> int:
        return len(self.malformed)

    def reject(self, line: JsonLine, error: str) -> None:
        """Count a line that parsed but that a reader cannot use (a value out of range, a wrong type)
        as malformed, with its offset and a preview, like a line that is not JSON."""
        import orjson

        self.malformed.append(MalformedLine(line.offset, line.size, error, _preview(orjson.dumps(line.obj))))


class JsonLine(NamedTuple):
    """One parsed line: the object, where its bytes start in the file and how many there are."""

    offset: int
    obj: dict
    """A dict, or the object a reader's own ``loads`` made of it (see `iter_jsonl`)."""
    size: int


_NOT_OBJECTS = frozenset({list, str, int, float, bool, type(None)})
"""What a JSON text that is not an object decodes to."""


def iter_jsonl(
    path: Path | str, start_offset: int = 0, stats: ParseStats | None = None, contains: bytes | None = None,
    loads: Callable[[bytes], object] | None = None,
) -> Iterator[JsonLine]:
    """Stream the JSON objects of ``path`` from ``start_offset``, one line at a time.

    Blank lines and lines that are not a JSON object are skipped and counted in ``stats`` (malformed
    ones with offset and a preview). ``stats.end_offset`` ends at the first byte not consumed: a final
    line with no newline is consumed only when it is a whole JSON object, so the next read starts at
    a line still being written (``1`` of ``10`` is a valid number, yet only the start of a line).
    With ``contains``, complete lines without those bytes are passed over unparsed (a reader that
    only wants some lines need not pay for decoding the rest; it also does not see their defects).
    ``loads`` decodes a line instead of ``orjson.loads``: into a dict or an object of the reader's own for a JSON
    object, raising orjson's error where orjson raises (resources/sources/claude_usage_lines.py).
    """
    import orjson

    stats = stats if stats is not None else ParseStats()
    offset = start_offset
    lines = 0
    loads, decode_error = loads or orjson.loads, orjson.JSONDecodeError
    try:
        with open(path, "rb", buffering=READ_BUFFER_BYTES) as f:
            f.seek(start_offset)
            for raw in f:
                size = len(raw)
                complete = raw[-1] == 10  # ends with b"\n"
                wanted = contains is None or contains in raw
                if complete and not wanted:
                    offset += size
                    continue
                try:
                    obj = loads(raw)
                except decode_error as exc:
                    if not complete:
                        break  # probably a line still being written: leave it for the next read
                    if raw.strip():
                        stats.malformed.append(MalformedLine(offset, size, f"invalid JSON: {exc}", _preview(raw)))
                    else:
                        stats.blank += 1
                    offset += size
                    continue
                if not complete and type(obj) in _NOT_OBJECTS:
                    break  # ``1`` of ``10`` or ``"a"`` of ``"a"b``: a valid prefix of a longer line, not a line
                line_offset = offset
                offset += size
                if type(obj) in _NOT_OBJECTS:
                    stats.malformed.append(
                        MalformedLine(line_offset, size, f"not a JSON object: {type(obj).__name__}", _preview(raw))
                    )
                elif wanted:
                    lines += 1
                    yield JsonLine(line_offset, obj, size)
    finally:
        stats.lines += lines
        stats.end_offset = offset
        stats.bytes_read += offset - start_offset


def _preview(raw: bytes) -> str:
    return raw[:PREVIEW_BYTES].decode("utf-8", errors="replace")


def parse_jsonl(path: Path | str) -> tuple[list[dict], ParseStats]:
    """All JSON objects of a (small) file, skipping blank and malformed lines; returns them and the stats."""
    stats = ParseStats()
    return [line.obj for line in iter_jsonl(path, 0, stats)], stats
