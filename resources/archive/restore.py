"""Writing archived versions to disk, inside a target folder only.

Every folder under the target is created and opened by descriptor with ``O_NOFOLLOW``, and so are
the file and its temp file, so a symlink anywhere on the way is refused (`UnsafeTarget`) instead of
leading out of the target, with no gap between a check and the write. A version is written to a temp
file, hash-checked against its snapshot, given its mtime, and only then renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from resources.archive.pack_format import PackCorrupt, PackError, Snapshot

if TYPE_CHECKING:
    from resources.archive.packs import ObjectReader


def safe_relative(session_key: str) -> PurePosixPath:
    rel = PurePosixPath(session_key)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise PackError(f"refusing to restore to unsafe path {session_key!r}")
    return rel


class UnsafeTarget(PackError):
    """A restore target whose folder, or the file itself, is a symlink (or not a folder)."""


def restore_file(reader: ObjectReader, snap: Snapshot, dest_fd: int, rel: PurePosixPath) -> str:
    parent = _open_folders(dest_fd, rel)
    try:
        status = _existing_status(parent, rel, snap)
        if status is None:
            write_version(reader, snap, parent, rel.name)
            status = "restored"
        return status
    finally:
        os.close(parent)


def _open_folders(dest_fd: int, rel: PurePosixPath) -> int:
    """A descriptor of the folder ``rel`` goes in, below ``dest_fd``: each level is created if missing and
    opened with O_NOFOLLOW, so a symlink anywhere on the way fails instead of leading out of the target."""
    fd = os.dup(dest_fd)
    try:
        for depth, part in enumerate(rel.parts[:-1]):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, dir_fd=fd)
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:  # ELOOP for a symlink, ENOTDIR for a file
                where = "/".join(rel.parts[: depth + 1])
                raise UnsafeTarget(f"{where} is a symlink or not a folder; nothing written through it") from exc
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _existing_status(parent: int, rel: PurePosixPath, snap: Snapshot) -> str | None:
    try:
        fd = os.open(rel.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafeTarget(f"{rel} is a symlink; left alone") from exc
    with open(fd, "rb") as f:
        same = hashlib.file_digest(f, "sha256").hexdigest() == snap.file_hash
    return "identical" if same else "conflict"


def write_version(reader: ObjectReader, snap: Snapshot, parent: int, name: str) -> None:
    """Write the version to a temp file in ``parent``, check its hash, set its mtime, rename it to ``name``."""
    temp = f".{name}.restore.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp, dir_fd=parent)  # a crashed restore's leftover (unlink never follows a symlink)
    digest = hashlib.sha256()
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=parent)
        with open(fd, "wb") as out:
            for chunk_id in snap.chunks:
                data = reader.get(chunk_id).raw()
                digest.update(data)
                out.write(data)
            out.flush()
            if digest.hexdigest() != snap.file_hash or os.fstat(fd).st_size != snap.size:
                raise PackCorrupt(f"restored bytes of {snap.session_key} do not match its archived hash")
            os.utime(fd, ns=(snap.mtime_ns, snap.mtime_ns))
        os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=parent)
