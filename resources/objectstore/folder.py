"""`FolderBlobs`: the `Blobs` operations on a plain folder (a mounted NAS, a Dropbox or iCloud Drive folder);
`FolderLocation`: the folder as a location, where code takes a `StorageLocation`.

The same contract as `resources.objectstore.blobs.Blobs`, on files: an object ``a/b.x`` is the file
``<root>/a/b.x``. A write goes to a hidden temporary file in the target's folder, is flushed to disk,
then linked to its name, which fails when the name exists: the file appears whole or not at all, and an
existing one is never overwritten (a folder that cannot hard-link, some network shares, gets a rename
after an existence check instead). ``list`` skips hidden names (``.*``: these temporaries, a Finder's
``.DS_Store``) and yields the rest in name order.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from resources.config.errors import StorageUnavailable
from resources.objectstore.blobs import BLOCK, BlobInfo


class FolderBlobs:
    """Objects under the folder ``root``; ``setting`` is the variable that named it (for error messages)."""

    def __init__(self, root: Path | str, setting: str = "folder"):
        self.root = Path(root)
        self.setting = setting

    def __repr__(self) -> str:
        return f"FolderBlobs({self.root})"

    def check(self) -> None:
        """`StorageUnavailable` when the folder does not exist or cannot be written (one line)."""
        if not self.root.is_dir():
            raise StorageUnavailable(f"{self.setting}={self.root}: no such folder; create it (or mount it) first")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(f"{self.setting}={self.root}: the folder cannot be written")

    def path(self, name: str) -> Path:
        if not name or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"not an object name: {name!r}")
        return self.root / name

    def put_bytes_if_absent(self, name: str, data: bytes) -> bool:
        return self._put_if_absent(name, lambda f: f.write(data))

    def put_fileobj_if_absent(self, name: str, body: BinaryIO) -> bool:
        def copy(f):
            while block := body.read(BLOCK):
                f.write(block)
        return self._put_if_absent(name, copy)

    def put_file_if_absent(self, name: str, path: Path | str) -> bool:
        with open(path, "rb") as body:
            return self.put_fileobj_if_absent(name, body)

    def _put_if_absent(self, name: str, write) -> bool:
        target = self.path(name)
        if target.exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(temp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(temp, target)
            except FileExistsError:
                return False
            except OSError:  # no hard links on this share
                if target.exists():
                    return False
                os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        return True

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def size(self, name: str) -> int | None:
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError:
            return None

    def get_bytes(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def download(self, name: str, out: BinaryIO) -> int:
        total = 0
        with open(self.path(name), "rb") as f:
            while block := f.read(BLOCK):
                out.write(block)
                total += len(block)
        return total

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[BlobInfo]:
        """Files whose name starts with ``prefix`` (and sorts after ``start_after``), in name order."""
        found: list[BlobInfo] = []
        for folder, dirs, files in os.walk(self.root / prefix.rpartition("/")[0]):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            base = Path(folder).relative_to(self.root).as_posix()
            for file in files:
                name = file if base == "." else f"{base}/{file}"
                if file.startswith(".") or not name.startswith(prefix) or (start_after and name <= start_after):
                    continue
                try:
                    st = os.stat(os.path.join(folder, file))
                except FileNotFoundError:  # deleted while listing
                    continue
                found.append(BlobInfo(name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        yield from sorted(found, key=lambda b: b.name)

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)


@dataclass(frozen=True)
class FolderLocation:
    """A folder standing where a `StorageLocation` stands (``uri``, ``child``, ``blobs``), so code written
    for a bucket (``sessionlake push``) writes into a folder the same way."""

    root: Path
    setting: str = "folder"

    @property
    def uri(self) -> str:
        return str(self.root)

    def child(self, *parts: str) -> FolderLocation:
        return FolderLocation(self.root.joinpath(*(p.strip("/") for p in parts if p.strip("/"))), self.setting)

    def blobs(self) -> FolderBlobs:
        return FolderBlobs(self.root, self.setting)
