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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pyarrow as pa

FORMAT_NAME = "sessionlake-pack"
FORMAT_VERSION = 1
PACK_SUFFIX = ".mpack"
TEMP_SUFFIX = ".tmp"
CHUNK_BYTES = 8 << 20
"""Largest raw chunk: new bytes of a file are cut into objects of at most this size."""
ZSTD_LEVEL = 9
_READ_SIZE = 1 << 16
_MAX_BUFFER = 2 * CHUNK_BYTES + (1 << 20)


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
    """One object as it sits in a pack: still compressed."""

    object_id: str
    codec: str
    size: int
    content: bytes

    def raw(self) -> bytes:
        """The chunk's bytes, checked against its id."""
        data = decompress(self.codec, self.content, self.size)
        if object_id(data) != self.object_id:
            raise PackCorrupt(f"object {self.object_id} does not match its content")
        return data

    def as_map(self) -> dict:
        return {"codec": self.codec, "content": self.content, "object_id": self.object_id, "size": self.size}


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

    def add_object(self, obj: StoredObject) -> None:
        if self._objects_left <= 0:
            raise ValueError("more objects than declared")
        if self._last_object is not None and obj.object_id <= self._last_object:
            raise ValueError(f"objects out of order: {obj.object_id} after {self._last_object}")
        self._put(self._packer.pack(obj.as_map()))
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

    def finish(self) -> tuple[str, Path, int]:
        if self._objects_left or self._snapshots_left:
            raise ValueError("pack finished before all declared entries were written")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        key = "sha256:" + self._hash.hexdigest()
        path = pack_path(self.directory, key)
        os.replace(self._temp, path)
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


def write_pack(directory: Path, objects: Iterable[StoredObject], object_count: int,
               snapshots: Iterable[Snapshot], snapshot_count: int) -> tuple[str, Path, int]:
    """Write a whole pack from two streams (objects in id order, snapshots in sort order)."""
    with PackWriter(directory, object_count, snapshot_count) as writer:
        for obj in objects:
            writer.add_object(obj)
        for snap in snapshots:
            writer.add_snapshot(snap)
        return writer.finish()


class _HashingReader:
    """A file wrapper that hashes every byte handed to the msgpack unpacker."""

    def __init__(self, f):
        self._f = f
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.hash.update(data)
        return data

    def drain(self) -> int:
        extra = 0
        while data := self.read(_READ_SIZE):
            extra += len(data)
        return extra


@dataclass(frozen=True)
class ObjectEntry:
    """Where one object sits in a verified pack file (byte range of its msgpack map)."""

    object_id: str
    size: int
    stored_size: int
    start: int
    end: int


@dataclass
class PackListing:
    """What a verified pack holds: object entries (in file order) and its snapshots."""

    key: str
    path: Path
    bytes: int
    objects: list[ObjectEntry]
    snapshots: list[Snapshot]


def _expect(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise PackError(f"{path.name}: malformed pack ({what})")


def scan_pack(path: Path, key: str) -> PackListing:
    """Verify and list the pack at ``path``; see `scan_pack_file`."""
    with open(path, "rb") as f:
        return scan_pack_file(f, path, key)


def scan_pack_file(f, path: Path, key: str) -> PackListing:
    """Read a whole open pack once, hashing it; list its objects (positions, not content) and snapshots.

    Raises PackCorrupt when the bytes do not hash to ``key`` (or do not parse), PackError when the
    document is a different format or version.
    """
    objects: list[ObjectEntry] = []
    snapshots: list[Snapshot] = []
    f.seek(0)
    reader = _HashingReader(f)
    unpacker = msgpack.Unpacker(reader, raw=False, read_size=_READ_SIZE, max_buffer_size=_MAX_BUFFER)
    try:
        _expect(unpacker.read_map_header() == 4, path, "header")
        _expect(unpacker.unpack() == "format" and unpacker.unpack() == FORMAT_NAME, path, "format name")
        _expect(unpacker.unpack() == "version", path, "version")
        version = unpacker.unpack()
        _expect(unpacker.unpack() == "objects", path, "objects")
        for _ in range(unpacker.read_array_header()):
            start = unpacker.tell()
            m = unpacker.unpack()
            _expect(isinstance(m, dict) and isinstance(m.get("content"), bytes), path, "object")
            objects.append(ObjectEntry(m["object_id"], m["size"], len(m["content"]), start, unpacker.tell()))
        _expect(unpacker.unpack() == "snapshots", path, "snapshots")
        for _ in range(unpacker.read_array_header()):
            m = unpacker.unpack()
            snapshots.append(Snapshot(m["session_key"], m["size"], m["file_hash"], m["mtime_ns"],
                                      tuple(m["chunks"])))
        end = unpacker.tell()
    except (msgpack.UnpackException, ValueError, KeyError, TypeError, PackError) as exc:
        # Altered bytes usually break parsing before the hash can be compared: that is corruption too.
        raise PackCorrupt(f"{path.name}: unreadable pack ({type(exc).__name__}: {exc})") from exc
    extra = reader.drain()
    actual = "sha256:" + reader.hash.hexdigest()
    if actual != key:
        raise PackCorrupt(f"{path.name}: bytes hash to {actual}, not to its key {key}")
    _expect(extra == 0, path, "trailing bytes")
    if version != FORMAT_VERSION:
        raise PackError(f"{path.name}: unsupported pack version {version!r}")
    return PackListing(key, path, end, objects, snapshots)


def read_object(f, entry: ObjectEntry) -> StoredObject:
    """Read one object from an open pack file at the position `scan_pack` recorded."""
    f.seek(entry.start)
    data = f.read(entry.end - entry.start)
    m = msgpack.unpackb(data, raw=False)
    if m.get("object_id") != entry.object_id:
        raise PackCorrupt(f"object {entry.object_id} is not where its pack listed it")
    return StoredObject(m["object_id"], m["codec"], m["size"], m["content"])


def iter_chunks(f, length: int) -> Iterator[bytes]:
    """The next ``length`` bytes of ``f`` in chunks of at most CHUNK_BYTES; raises if the file is shorter."""
    while length > 0:
        data = f.read(min(CHUNK_BYTES, length))
        if not data:
            raise PackError("file shrank while being archived")
        length -= len(data)
        yield data
