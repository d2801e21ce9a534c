"""Adoption: a pack that is already in an archive's files (pushed to a team bucket) joins its index.

The central team ingest (`resources.team.ingest`) adopts each pushed pack before it runs
the processors over the versions in it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import duckdb

from resources.archive import pack_index
from resources.archive.pack_format import PackError, Snapshot

if TYPE_CHECKING:
    from resources.archive.packs import ObjectReader


def adopt_pack(key: str, repo: str, reader: ObjectReader, conn: duckdb.DuckDBPyConnection) -> list[Snapshot]:
    """Register pack ``key``, already in the files of ``reader``'s store, as a live pack of ``repo``.

    The pack is opened and verified through ``reader`` (a reader of ``repo``, which keeps it open,
    so reading its objects next costs no second download) and must hold only sessions of
    ``repo``; then, in one transaction on ``conn``, it becomes a live pack with its objects indexed (an object
    ``repo`` already indexes keeps its pack) and its snapshots recorded, new or not, as observed
    now. Adopting a pack twice changes nothing but the observation time. Returns its snapshots.
    """
    listing = reader.open_pack(key)
    strays = sorted({s.session_key for s in listing.snapshots
                     if _claude_project(s.session_key) not in (None, repo)})
    if strays:
        raise PackError(f"pack {key} holds sessions outside project {repo}, e.g. {strays[0]}")
    pack_index.register(conn, [pack_index.PackRows(repo, key, listing.bytes, listing.objects, listing.snapshots)],
                        seen={repo: listing.snapshots}, now=datetime.now(UTC), revive=False)
    return listing.snapshots


def _claude_project(session_key: str) -> str | None:
    """A Claude Code key's project (its first path component); None for other agents' ``agent:...`` keys,
    whose project is not part of the key (the manifest names it)."""
    first = session_key.split("/", 1)[0]
    return None if ":" in first else first
