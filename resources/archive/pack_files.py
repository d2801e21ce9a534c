"""Where pack files live: a local folder (the default) or a bucket prefix (``SESSIONLAKE_STORAGE_URI``).

Both keep the same guarantees, and `PackStore` and GC use them without knowing which is which:
- a pack becomes visible whole, under its content key, or not at all, and an existing pack is never
  overwritten. Locally: temp file, fsync, rename, folder fsync (`PackWriter`). In a bucket: the same
  temp file, then one create-only PUT (``If-None-Match: *``), then the temp file goes;
- ``open(key)`` gives a seekable file of the pack's bytes that the caller verifies against the key
  (`scan_pack_file`) before trusting anything in it; in a bucket the object is streamed into an
  unnamed temp file first, so memory does not grow with pack size and a sweep deleting the object
  afterwards does not disturb a reader; a missing pack raises FileNotFoundError;
- ``stored()`` lists the packs with size and modification time, for the sweep.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from resources.archive.pack_format import PACK_SUFFIX, key_hex, pack_path


@dataclass(frozen=True)
class StoredPack:
    name: str
    """``<hex>.mpack``"""
    size: int
    modified: float
    """Seconds since the epoch."""


class LocalPackFiles:
    """Packs as ``<hex>.mpack`` files in ``directory``, written in place."""

    in_bucket = False

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    @property
    def write_dir(self) -> Path:
        """Where `PackWriter` writes (and the sweep finds interrupted temp files)."""
        return self.directory

    def describe(self) -> str:
        return str(self.directory)

    def publish(self, key: str, path: Path) -> None:
        """Nothing to do: `PackWriter.finish` renamed the pack into place."""

    def open(self, key: str) -> BinaryIO:
        return open(pack_path(self.directory, key), "rb")  # noqa: SIM115 - the caller closes it

    def delete(self, key: str) -> bool:
        try:
            pack_path(self.directory, key).unlink()
        except FileNotFoundError:
            return False
        return True

    def stored(self) -> Iterator[StoredPack]:
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"*{PACK_SUFFIX}")):
            if path.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                if path.is_file():
                    yield StoredPack(path.name, st.st_size, st.st_mtime)


class BucketPackFiles:
    """Packs as objects ``<hex>.mpack`` under a bucket prefix (`resources.objectstore.blobs.Blobs`);
    ``staging`` holds the temp files of packs being written and downloaded."""

    in_bucket = True

    def __init__(self, blobs, staging: Path | str):
        self.blobs = blobs
        self.staging = Path(staging)

    @property
    def write_dir(self) -> Path:
        return self.staging

    def describe(self) -> str:
        return self.blobs.location.uri

    @staticmethod
    def name(key: str) -> str:
        return f"{key_hex(key)}{PACK_SUFFIX}"

    def publish(self, key: str, path: Path) -> None:
        """Create the object from the finished local pack (a no-op if it already exists: the same key is
        the same bytes), then remove the local copy."""
        self.blobs.put_file_if_absent(self.name(key), path)
        path.unlink()

    def open(self, key: str) -> BinaryIO:
        self.staging.mkdir(parents=True, exist_ok=True)
        f = tempfile.TemporaryFile(dir=self.staging)  # noqa: SIM115 - the caller closes it (and so deletes it)
        try:
            self.blobs.download(self.name(key), f)
        except BaseException:
            f.close()
            raise
        f.seek(0)
        return f

    def delete(self, key: str) -> bool:
        self.blobs.delete(self.name(key))
        return True

    def stored(self) -> Iterator[StoredPack]:
        for blob in self.blobs.list():
            if blob.name.endswith(PACK_SUFFIX) and "/" not in blob.name:
                yield StoredPack(blob.name, blob.size, blob.modified.timestamp())
