"""Adoption: a pack that is already in an archive's files (pushed to a team bucket) joins its index.

The central team ingest (`resources.team.ingest`) adopts each pushed pack before it runs
the processors over the versions in it. A machine taking in another machine's packs (``sessionlake
sync --with-transcripts``) first copies each into its own archive's files (`receive_pack`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import duckdb

from resources.archive import pack_index
from resources.archive.pack_format import (
    PACK_SUFFIX,
    TEMP_SUFFIX,
    PackError,
    Snapshot,
    fsync_dir,
    key_hex,
    pack_path,
    scan_pack_file,
)

if TYPE_CHECKING:
    from resources.archive.packs import ObjectReader, PackStore


def adopt_pack(key: str, repo: str, reader: ObjectReader, conn: duckdb.DuckDBPyConnection) -> list[Snapshot]:
    """Register pack ``key``, already in the files of ``reader``'s store, as a live pack of ``repo``.

    The pack is opened and verified through ``reader`` (a reader of ``repo``, which keeps it open,
    so reading its objects next costs no second download) and must hold only sessions of
    ``repo``; then, in one transaction on ``conn``, it becomes a live pack with its objects indexed (an object
    ``repo`` already indexes keeps its pack) and the snapshots ``repo`` does not record yet recorded and
    observed now. A version recorded before keeps its timeline: a pack that holds old versions again
    (another archive's consolidated pack) does not make them the latest. Adopting a pack twice changes
    nothing. Returns its snapshots.
    """
    listing = reader.open_pack(key)
    strays = sorted({s.session_key for s in listing.snapshots
                     if _claude_project(s.session_key) not in (None, repo)})
    if strays:
        raise PackError(f"pack {key} holds sessions outside project {repo}, e.g. {strays[0]}")
    known = pack_index.known_versions(conn, {repo: listing.snapshots}).get(repo, set())
    new = [s for s in listing.snapshots if (s.session_key, s.file_hash) not in known]
    pack_index.register(conn, [pack_index.PackRows(repo, key, listing.bytes, listing.objects, listing.snapshots)],
                        seen={repo: new}, now=datetime.now(UTC), revive=False)
    return listing.snapshots


def receive_pack(store: PackStore, key: str, download: Callable[[BinaryIO], int]) -> int:
    """Copy pack ``key`` into ``store``'s files: ``download(file)`` writes its bytes to a temp file, which
    is verified against the key (`PackCorrupt` otherwise: nothing is kept) and only then put in place,
    whole (a local rename, or a create-only upload to the storage bucket; the same key is the same
    bytes, so a pack already there is left as it is). Returns the bytes received. Not indexed yet:
    `adopt_pack` does that."""
    files = store.files
    files.write_dir.mkdir(parents=True, exist_ok=True)
    temp = files.write_dir / f".{uuid.uuid4().hex}{PACK_SUFFIX}{TEMP_SUFFIX}"  # swept if a kill leaves it
    try:
        with open(temp, "xb") as f:
            nbytes = download(f)
            f.flush()
            os.fsync(f.fileno())
        with open(temp, "rb") as f:
            scan_pack_file(f, Path(f"{key_hex(key)}{PACK_SUFFIX}"), key)
        if files.in_bucket:
            files.publish(key, temp)
        else:
            os.replace(temp, pack_path(files.directory, key))
            fsync_dir(files.directory)
    finally:
        temp.unlink(missing_ok=True)
    return nbytes


def _claude_project(session_key: str) -> str | None:
    """A Claude Code key's project (its first path component); None for other agents' ``agent:...`` keys,
    whose project is not part of the key (the manifest names it)."""
    first = session_key.split("/", 1)[0]
    return None if ":" in first else first
