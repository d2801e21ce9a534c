"""The archive's DuckDB index, write side: registering a pack and recording what an ingest saw.

A pack is registered with a ``packs`` row, one ``pack_index`` row per object (primary key
(repo, object_id): an object is indexed once per repo, so one already indexed keeps its pack) and
its ``snapshots`` (one per version of a file; a version already recorded keeps its row). Every time
an ingest sees a version on disk it is recorded in ``snapshot_observations`` (the timeline). Each
function runs on the caller's connection; `register` and `observe` are one transaction each.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from resources.archive.pack_format import ObjectEntry, Snapshot
from resources.state.store import insert_rows, transaction

if TYPE_CHECKING:
    from resources.archive.packs import PendingObject


def known_objects(conn: duckdb.DuckDBPyConnection, repo: str, object_ids: Sequence[str]) -> set[str]:
    """The ids among ``object_ids`` that ``repo`` indexes already."""
    return set(_known(conn, "pack_index", "object_id", repo, list(object_ids)))


def known_versions(conn: duckdb.DuckDBPyConnection, repo: str,
                   snapshots: Sequence[Snapshot]) -> set[tuple[str, str]]:
    """``(session_key, file_hash)`` of the versions among ``snapshots`` that ``repo`` records already."""
    by_name = {f"{s.session_key}@{s.file_hash}": (s.session_key, s.file_hash) for s in snapshots}
    return {by_name[v] for v in _known(conn, "snapshots", "session_key || '@' || file_hash", repo, list(by_name))}


def register(conn: duckdb.DuckDBPyConnection, repo: str, key: str, nbytes: int,
             objects: Sequence[PendingObject | ObjectEntry], snapshots: Sequence[Snapshot], *,
             seen: Sequence[Snapshot], now: datetime, revive: bool) -> None:
    """In one transaction: pack ``key`` of ``repo`` (``nbytes``, live, created ``now``) with ``objects``
    indexed and ``snapshots`` recorded (archived ``now``), and ``seen`` observed now (`observe`).

    A ``packs`` row already there for ``key`` is made live again with ``revive`` (a pack written anew
    after a GC tombstoned it), else kept as it is.
    """
    conflict = "DO UPDATE SET state = 'live', tombstoned_at = NULL" if revive else "DO NOTHING"
    with transaction(conn):
        conn.execute(f"INSERT INTO packs VALUES (?, ?, ?, ?, ?, 'live', ?, NULL) ON CONFLICT (pack_key) {conflict}",
                     [key, repo, nbytes, len(objects), len(snapshots), now])
        insert_rows(conn, "pack_index", pa.table({
            "repo": pa.array([repo] * len(objects), pa.string()),
            "object_id": pa.array([o.object_id for o in objects], pa.string()),
            "pack_key": pa.array([key] * len(objects), pa.string()),
            "size": pa.array([o.size for o in objects], pa.int64()),
            "stored_size": pa.array([o.stored_size for o in objects], pa.int64()),
        }))
        insert_rows(conn, "snapshots", pa.table({
            "repo": pa.array([repo] * len(snapshots), pa.string()),
            "session_key": pa.array([s.session_key for s in snapshots], pa.string()),
            "file_hash": pa.array([s.file_hash for s in snapshots], pa.string()),
            "size": pa.array([s.size for s in snapshots], pa.int64()),
            "mtime_ns": pa.array([s.mtime_ns for s in snapshots], pa.int64()),
            "chunks": pa.array([list(s.chunks) for s in snapshots], pa.list_(pa.string())),
            "pack_key": pa.array([key] * len(snapshots), pa.string()),
            "archived_at": pa.array([now] * len(snapshots), pa.timestamp("us", tz="UTC")),
        }))
        _observe(conn, repo, seen, now)


def observe(conn: duckdb.DuckDBPyConnection, repo: str, snapshots: Sequence[Snapshot], now: datetime) -> None:
    """In one transaction: record that ``snapshots`` were on disk ``now`` (seen again with the same
    mtime: the time moves)."""
    with transaction(conn):
        _observe(conn, repo, snapshots, now)


def _observe(conn: duckdb.DuckDBPyConnection, repo: str, snapshots: Sequence[Snapshot], now: datetime) -> None:
    snapshots = list({(s.session_key, s.file_hash, s.mtime_ns): s for s in snapshots}.values())
    insert_rows(conn, "snapshot_observations", pa.table({
        "repo": pa.array([repo] * len(snapshots), pa.string()),
        "session_key": pa.array([s.session_key for s in snapshots], pa.string()),
        "file_hash": pa.array([s.file_hash for s in snapshots], pa.string()),
        "mtime_ns": pa.array([s.mtime_ns for s in snapshots], pa.int64()),
        "observed_at": pa.array([now] * len(snapshots), pa.timestamp("us", tz="UTC")),
    }), conflict="ON CONFLICT DO UPDATE SET observed_at = excluded.observed_at")


def _known(conn: duckdb.DuckDBPyConnection, table: str, expr: str, repo: str, values: list[str]) -> list[str]:
    if not values:
        return []
    return [r[0] for r in conn.execute(
        f"SELECT {expr} FROM {table} WHERE repo = ? AND {expr} IN (SELECT unnest(?))", [repo, values]
    ).fetchall()]
