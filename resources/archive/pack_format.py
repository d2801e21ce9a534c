"""The pack file format: one deterministic msgpack document per pack, written and read as a stream.

A pack is a msgpack map with four keys, always in this order::

    {"format": "sessionlake-pack", "version": 1,
     "objects":   [{"codec", "content", "object_id", "size"}, ...]   sorted by object_id,
     "snapshots": [{"chunks", "file_hash", "mtime_ns", "session_key", "size"}, ...]
                  sorted by (session_key, mtime_ns, file_hash)}

``object_id`` is ``sha256:<hex>`` of the raw chunk, ``size`` its raw length, ``content`` the chunk
compressed with ``codec`` ("zstd" through pyarrow, or "none" when zstd does not shrink it). There
are no timestamps and every map is written with sorted keys, so the same content always gives the
same bytes and therefore the same key: ``sha256:<hex of the pack bytes>``, stored as ``<hex>.mpack``.

Writes go to a temp file in the packs folder, are fsynced, renamed into place with ``os.replace``
and the folder is fsynced. Reads hash every byte while parsing and refuse a pack whose bytes do not
match its key. Nothing here holds more than one object in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgpack
import pyarrow as pa

FORMAT_NAME = "sessionlake-pack"
FORMAT_VERSION = 1
PACK_SUFFIX = ".mpack"
TEMP_SUFFIX = ".tmp"
CHUNK_BYTES = 8 << 20
"""Largest raw chunk: new bytes of a file are cut into objects of at most this size."""
ZSTD_LEVEL = 3
"""zstd's default: on session JSONL, level 9 saves under 1% more and compresses 6x slower."""
_BLOCK = 1 << 18


class PackError(Exception):
    """A pack is missing, malformed, or its bytes do not match its key."""


class PackCorrupt(PackError):
    """The bytes on disk do not hash to the pack's key (or an object to its id)."""


def object_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def key_hex(key: str) -> str:
    """The hex part of ``sha256:<hex>``; raises on anything else (keys become file names)."""
    prefix, _, hexpart = key.partition(":")
    if prefix != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise PackError(f"not a pack key: {key!r}")
    return hexpart


def pack_path(packs_dir: Path, key: str) -> Path:
    return packs_dir / f"{key_hex(key)}{PACK_SUFFIX}"


def _zstd() -> pa.Codec:
    return pa.Codec("zstd", compression_level=ZSTD_LEVEL)


def compress(data: bytes) -> tuple[str, bytes]:
    """(codec, stored bytes) for a raw chunk: zstd unless that does not make it smaller."""
    packed = _zstd().compress(data, asbytes=True)
    return ("zstd", packed) if len(packed) < len(data) else ("none", bytes(data))


def decompress(codec: str, content: bytes, size: int) -> bytes:
    if codec == "none":
        return content
    if codec == "zstd":
        return _zstd().decompress(content, decompressed_size=size, asbytes=True)
    raise PackError(f"unknown codec {codec!r}")


@dataclass(frozen=True)
class StoredObject:
    """One object with its stored (compressed) bytes in memory."""

    object_id: str
    codec: str
    size: int
    content: bytes

    @property
    def stored_size(self) -> int:
        return len(self.content)

    def write_content(self, put: Callable[[bytes], None]) -> None:
        put(self.content)

    def raw(self) -> bytes:
        """The chunk's bytes, checked against its id."""
        data = decompress(self.codec, self.content, self.size)
        if object_id(data) != self.object_id:
            raise PackCorrupt(f"object {self.object_id} does not match its content")
        return data


@dataclass(frozen=True)
class ObjectEntry:
    """Where one object's stored bytes sit in a file (a verified pack, or the archive spool)."""

    object_id: str
    codec: str
    size: int
    stored_size: int
    start: int


@dataclass(frozen=True)
class ObjectRef:
    """An object left in its file: copied into a new pack block by block, never loaded whole."""

    entry: ObjectEntry
    file: BinaryIO

    object_id = property(lambda self: self.entry.object_id)
    codec = property(lambda self: self.entry.codec)
    size = property(lambda self: self.entry.size)
    stored_size = property(lambda self: self.entry.stored_size)

    def write_content(self, put: Callable[[bytes], None]) -> None:
        self.file.seek(self.entry.start)
        left = self.entry.stored_size
        while left > 0:
            block = self.file.read(min(_BLOCK, left))
            if not block:
                raise PackCorrupt(f"object {self.object_id} is cut short in its file")
            put(block)
            left -= len(block)

    def load(self) -> StoredObject:
        self.file.seek(self.entry.start)
        content = self.file.read(self.entry.stored_size)
        if len(content) != self.entry.stored_size:
            raise PackCorrupt(f"object {self.object_id} is cut short in its file")
        return StoredObject(self.object_id, self.codec, self.size, content)


@dataclass(frozen=True)
class Snapshot:
    """One version of one session file: its bytes are the concatenation of ``chunks``."""

    session_key: str
    size: int
    file_hash: str
    mtime_ns: int
    chunks: tuple[str, ...]

    def sort_key(self) -> tuple:
        return (self.session_key, self.mtime_ns, self.file_hash)

    def as_map(self) -> dict:
        return {"chunks": list(self.chunks), "file_hash": self.file_hash, "mtime_ns": self.mtime_ns,
                "session_key": self.session_key, "size": self.size}


def _bin_header(n: int) -> bytes:
    """The msgpack bin8/16/32 header msgpack itself would write for ``n`` bytes."""
    if n < 1 << 8:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PackWriter:
    """Stream one pack to disk: declare the counts, add objects in id order, then snapshots.

    ``finish()`` makes it durable and returns ``(key, path, bytes)``; leaving the ``with`` block
    without finishing removes the temp file. Out-of-order or miscounted entries raise ValueError,
    because they would make the encoding depend on the caller.
    """

    def __init__(self, directory: Path, object_count: int, snapshot_count: int):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._temp = self.directory / f".{uuid.uuid4().hex}{PACK_SUFFIX}{TEMP_SUFFIX}"
        self._file = open(self._temp, "xb")  # noqa: SIM115 - closed in finish()/close()
        self._hash = hashlib.sha256()
        self._packer = msgpack.Packer(use_bin_type=True)
        self._objects_left = object_count
        self._snapshots_left = snapshot_count
        self._last_object: str | None = None
        self._last_snapshot: tuple | None = None
        self.bytes = 0
        self._put(self._packer.pack_map_header(4))
        self._put(self._packer.pack("format") + self._packer.pack(FORMAT_NAME))
        self._put(self._packer.pack("version") + self._packer.pack(FORMAT_VERSION))
        self._put(self._packer.pack("objects") + self._packer.pack_array_header(object_count))
        if object_count == 0:
            self._put(self._packer.pack("snapshots") + self._packer.pack_array_header(snapshot_count))

    def _put(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.bytes += len(data)

    def add_object(self, obj: StoredObject | ObjectRef) -> None:
        """Append one object; its bytes are the same ``msgpack.packb`` gives for the map, but the
        content is streamed (an `ObjectRef` is copied block by block)."""
        if self._objects_left <= 0:
            raise ValueError("more objects than declared")
        if self._last_object is not None and obj.object_id <= self._last_object:
            raise ValueError(f"objects out of order: {obj.object_id} after {self._last_object}")
        pack = self._packer.pack
        self._put(b"\x84" + pack("codec") + pack(obj.codec) + pack("content") + _bin_header(obj.stored_size))
        obj.write_content(self._put)
        self._put(pack("object_id") + pack(obj.object_id) + pack("size") + pack(obj.size))
        self._objects_left -= 1
        self._last_object = obj.object_id
        if self._objects_left == 0:
            self._put(self._packer.pack("snapshots") + self._packer.pack_array_header(self._snapshots_left))

    def add_snapshot(self, snap: Snapshot) -> None:
        if self._objects_left:
            raise ValueError(f"{self._objects_left} declared objects not written before the snapshots")
        if self._snapshots_left <= 0:
            raise ValueError("more snapshots than declared")
        if self._last_snapshot is not None and snap.sort_key() <= self._last_snapshot:
            raise ValueError(f"snapshots out of order: {snap.sort_key()} after {self._last_snapshot}")
        self._put(self._packer.pack(snap.as_map()))
        self._snapshots_left -= 1
        self._last_snapshot = snap.sort_key()

    def finish(self, sync_dir: bool = True) -> tuple[str, Path, int]:
        """Make the pack durable under its key. Not ``sync_dir``: the folder is not fsynced, and the pack's name
        is durable only once the caller fsyncs it (`fsync_dir`), which one call does for many packs."""
        if self._objects_left or self._snapshots_left:
            raise ValueError("pack finished before all declared entries were written")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        key = "sha256:" + self._hash.hexdigest()
        path = pack_path(self.directory, key)
        os.replace(self._temp, path)
        if sync_dir:
            fsync_dir(self.directory)
        return key, path, self.bytes

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._temp.unlink()

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_pack(directory: Path, objects: Iterable[StoredObject | ObjectRef], object_count: int,
               snapshots: Iterable[Snapshot], snapshot_count: int, sync_dir: bool = True) -> tuple[str, Path, int]:
    """Write a whole pack from two streams (objects in id order, snapshots in sort order); ``sync_dir``: see
    `PackWriter.finish`."""
    with PackWriter(directory, object_count, snapshot_count) as writer:
        for obj in objects:
            writer.add_object(obj)
        for snap in snapshots:
            writer.add_snapshot(snap)
        return writer.finish(sync_dir)


class _Stream:
    """Sequential reads of a pack that hash every byte and track the position; skips are streamed."""

    def __init__(self, f: BinaryIO, path: Path):
        self._f = f
        self.path = path
        self.hash = hashlib.sha256()
        self.pos = 0

    def read(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise PackCorrupt(f"{self.path.name}: truncated at byte {self.pos + len(data)}")
        self.hash.update(data)
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            n -= len(self.read(min(_BLOCK, n)))

    def drain(self) -> int:
        extra = 0
        while data := self._f.read(_BLOCK):
            self.hash.update(data)
            extra += len(data)
        return extra

    def header(self, wide: dict[int, int], fix: tuple[int, int] | None = None) -> int:
        """A msgpack length header: ``wide`` maps a type byte to the width of the length that
        follows; type bytes in the ``fix`` range hold the length inline."""
        t = self.read(1)[0]
        if fix is not None and fix[0] <= t <= fix[1]:
            return t - fix[0]
        if t in wide:
            return int.from_bytes(self.read(wide[t]), "big")
        raise PackCorrupt(f"{self.path.name}: unexpected msgpack type 0x{t:02x} at byte {self.pos - 1}")

    def map_header(self) -> int:
        return self.header({0xDE: 2, 0xDF: 4}, fix=(0x80, 0x8F))

    def array_header(self) -> int:
        return self.header({0xDC: 2, 0xDD: 4}, fix=(0x90, 0x9F))

    def bin_header(self) -> int:
        return self.header({0xC4: 1, 0xC5: 2, 0xC6: 4})

    def str(self) -> str:
        return self.read(self.header({0xD9: 1, 0xDA: 2, 0xDB: 4}, fix=(0xA0, 0xBF))).decode()

    def int(self) -> int:
        t = self.read(1)[0]
        if t <= 0x7F or t >= 0xE0:  # positive / negative fixint
            return t if t <= 0x7F else t - 0x100
        widths = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
        if t not in widths:
            raise PackCorrupt(f"{self.path.name}: expected an integer at byte {self.pos - 1}")
        return int.from_bytes(self.read(widths[t]), "big", signed=t >= 0xD0)

    def expect(self, *keys: str) -> None:
        for key in keys:
            got = self.str()
            if got != key:
                raise PackCorrupt(f"{self.path.name}: expected {key!r} at byte {self.pos}, found {got!r}")


@dataclass
class PackListing:
    """What a verified pack holds: object entries (in file order) and its snapshots."""

    key: str
    path: Path
    bytes: int
    objects: list[ObjectEntry]
    snapshots: list[Snapshot]


def scan_pack(path: Path, key: str) -> PackListing:
    """Verify and list the pack at ``path``; see `scan_pack_file`."""
    with open(path, "rb") as f:
        return scan_pack_file(f, path, key)


def scan_pack_file(f: BinaryIO, path: Path, key: str) -> PackListing:
    """Read a whole open pack once, hashing every byte; list its objects (positions) and snapshots.

    Object contents are skipped in blocks, so memory does not depend on object size. Raises
    PackCorrupt when the bytes do not hash to ``key`` or are not a version-1 pack laid out as
    `PackWriter` writes it.
    """
    f.seek(0)
    s = _Stream(f, path)
    try:
        objects, snapshots = _parse(s)
    except (PackCorrupt, UnicodeDecodeError) as exc:
        s.drain()
        if "sha256:" + s.hash.hexdigest() != key:
            raise PackCorrupt(f"{path.name}: bytes do not hash to its key {key} ({exc})") from None
        raise PackCorrupt(f"{path.name}: {exc}") from None
    end = s.pos
    extra = s.drain()
    actual = "sha256:" + s.hash.hexdigest()
    if actual != key:
        raise PackCorrupt(f"{path.name}: bytes hash to {actual}, not to its key {key}")
    if extra:
        raise PackCorrupt(f"{path.name}: {extra} trailing bytes after the pack document")
    return PackListing(key, path, end, objects, snapshots)


def _parse(s: _Stream) -> tuple[list[ObjectEntry], list[Snapshot]]:
    name = s.path.name
    objects: list[ObjectEntry] = []
    snapshots: list[Snapshot] = []
    if s.map_header() != 4:
        raise PackCorrupt(f"{name}: not a pack document")
    s.expect("format", FORMAT_NAME, "version")
    version = s.int()
    if version != FORMAT_VERSION:
        raise PackError(f"{name}: unsupported pack version {version}")
    s.expect("objects")
    for _ in range(s.array_header()):
        if s.map_header() != 4:
            raise PackCorrupt(f"{name}: malformed object at byte {s.pos}")
        s.expect("codec")
        codec = s.str()
        s.expect("content")
        stored = s.bin_header()
        start = s.pos
        s.skip(stored)
        s.expect("object_id")
        oid = s.str()
        s.expect("size")
        objects.append(ObjectEntry(oid, codec, s.int(), stored, start))
    s.expect("snapshots")
    for _ in range(s.array_header()):
        if s.map_header() != 5:
            raise PackCorrupt(f"{name}: malformed snapshot at byte {s.pos}")
        s.expect("chunks")
        chunks = tuple(s.str() for _ in range(s.array_header()))
        s.expect("file_hash")
        file_hash = s.str()
        s.expect("mtime_ns")
        mtime_ns = s.int()
        s.expect("session_key")
        session_key = s.str()
        s.expect("size")
        snapshots.append(Snapshot(session_key, s.int(), file_hash, mtime_ns, chunks))
    return objects, snapshots


def iter_chunks(f, length: int) -> Iterator[bytes]:
    """The next ``length`` bytes of ``f`` in chunks of at most CHUNK_BYTES; raises if the file is shorter."""
    while length > 0:
        data = f.read(min(CHUNK_BYTES, length))
        if not data:
            raise PackError("file shrank while being archived")
        length -= len(data)
        yield data
