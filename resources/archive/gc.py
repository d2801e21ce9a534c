"""Pack GC (consolidation), the grace-period sweep, and verification of the archive.

GC of a repo with more than one live pack streams every live object (once) and every snapshot into
one consolidated pack, writes it durably, then in ONE DuckDB transaction repoints the index and the
snapshots to it and tombstones the old packs. A crash before that commit leaves the old packs live
and the new file an orphan (rewritten identically by the next run, or swept); a crash after it
leaves tombstones that a later `sweep` deletes once the grace period has passed, so a reader that
resolved an old key a moment ago still finds its file.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from resources.archive.pack_format import (
    PACK_SUFFIX,
    TEMP_SUFFIX,
    PackError,
    Snapshot,
    scan_pack_file,
)
from resources.state.store import transaction

if TYPE_CHECKING:
    from resources.archive.packs import PackStore


def gc_repo(store: PackStore, repo: str) -> dict:
    """Consolidate ``repo``'s live packs; returns ``{repo, packs_before, packs_after, consolidated_key,
    skipped, objects, snapshots, bytes}``. A repo with at most one live pack is skipped and its one
    pack's key (or None) returned, so running GC twice gives the same key.

    Memory holds object ids and snapshot rows, never more than one object's bytes at a time.
    """
    with store.state.connect() as conn:
        keys = [r[0] for r in conn.execute(
            "SELECT pack_key FROM packs WHERE repo = ? AND state = 'live' ORDER BY pack_key", [repo]
        ).fetchall()]
        if len(keys) <= 1:
            return {"repo": repo, "packs_before": len(keys), "packs_after": len(keys),
                    "consolidated_key": keys[0] if keys else None, "skipped": True}
        where = dict(conn.execute(
            "SELECT object_id, pack_key FROM pack_index WHERE repo = ? AND list_contains(?, pack_key)", [repo, keys]
        ).fetchall())
        snapshots = sorted(
            (Snapshot(r[0], r[1], r[2], r[3], tuple(r[4])) for r in conn.execute(
                """SELECT session_key, size, file_hash, mtime_ns, chunks FROM snapshots
                   WHERE repo = ? AND list_contains(?, pack_key)""", [repo, keys]
            ).fetchall()),
            key=Snapshot.sort_key,
        )
    ids = sorted(where)
    with store.reader(repo) as reader:
        reader.load(where)
        key, nbytes = store.write_pack((reader.ref(oid) for oid in ids), len(ids), snapshots, len(snapshots))
    after = _swap(store, repo, keys, key, nbytes, len(ids), len(snapshots))
    return {"repo": repo, "packs_before": len(keys), "packs_after": int(after), "consolidated_key": key,
            "skipped": False, "objects": len(ids), "snapshots": len(snapshots), "bytes": nbytes}


def _swap(store: PackStore, repo: str, old_keys: list[str], key: str, nbytes: int, objects: int,
          snapshots: int) -> int:
    """Run the swap transaction; returns the repo's live pack count after it."""
    with store.state.connect() as conn:
        with transaction(conn):
            _repoint(conn, repo, old_keys, key, nbytes, objects, snapshots, datetime.now(UTC))
        return conn.execute("SELECT count(*) FROM packs WHERE repo = ? AND state = 'live'", [repo]).fetchall()[0][0]


def _repoint(conn, repo: str, old_keys: list[str], key: str, nbytes: int, objects: int, snapshots: int,
             now: datetime) -> None:
    """The statements of the swap transaction (the caller begins and commits it)."""
    still_live = conn.execute(
        "SELECT count(*) FROM packs WHERE repo = ? AND state = 'live' AND list_contains(?, pack_key)",
        [repo, old_keys],
    ).fetchall()[0][0]
    if still_live != len(old_keys):
        raise PackError(f"{repo}: its live packs changed while GC ran; run GC again")
    conn.execute(
        """INSERT INTO packs VALUES (?, ?, ?, ?, ?, 'live', ?, NULL)
           ON CONFLICT (pack_key) DO UPDATE SET state = 'live', tombstoned_at = NULL""",
        [key, repo, nbytes, objects, snapshots, now],
    )
    for table in ("pack_index", "snapshots"):
        conn.execute(f"UPDATE {table} SET pack_key = ? WHERE repo = ? AND list_contains(?, pack_key)",
                     [key, repo, old_keys])
    conn.execute(
        """UPDATE packs SET state = 'tombstoned', tombstoned_at = ?
           WHERE repo = ? AND list_contains(?, pack_key) AND pack_key <> ?""",
        [now, repo, old_keys, key],
    )


def sweep(store: PackStore, now: datetime | None = None) -> dict:
    """Delete what no reader can need any more, once it is older than ``store.grace_sec``:
    tombstoned packs (file, then row), pack files with no row (a crash before registration), and
    temp files of interrupted writes. Returns counts and ``bytes_freed``.

    In a bucket, a pack with no row is left alone (counted in ``orphans_kept``): the bucket may be a
    team's, where such a pack is usually one a machine pushed and the central ingest has not read yet.
    """
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(seconds=store.grace_sec)
    with store.state.connect() as conn:
        due = conn.execute(
            """SELECT pack_key, bytes FROM packs p WHERE state = 'tombstoned' AND tombstoned_at <= ?
               AND NOT EXISTS (SELECT 1 FROM pack_index i WHERE i.pack_key = p.pack_key)
               AND NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.pack_key = p.pack_key)""",
            [cutoff],
        ).fetchall()
    freed = 0
    for key, nbytes in due:
        if store.files.delete(key):
            freed += nbytes
    with store.state.connect() as conn:
        if due:
            conn.execute("DELETE FROM packs WHERE state = 'tombstoned' AND list_contains(?, pack_key)",
                         [[k for k, _ in due]])
        known = {r[0] for r in conn.execute("SELECT pack_key FROM packs").fetchall()}
    orphans = kept = temps = 0
    limit = cutoff.timestamp()
    for pack in list(store.files.stored()):
        if f"sha256:{pack.name[: -len(PACK_SUFFIX)]}" in known or pack.modified > limit:
            continue
        if store.files.in_bucket:
            kept += 1
            continue
        if store.files.delete(f"sha256:{pack.name[: -len(PACK_SUFFIX)]}"):
            freed += pack.size
            orphans += 1
    write_dir = store.files.write_dir
    for path in sorted(write_dir.glob(f".*{TEMP_SUFFIX}")) if write_dir.is_dir() else []:
        try:
            st = path.stat()
            if not path.is_file() or st.st_mtime > limit:
                continue
            path.unlink()
        except FileNotFoundError:
            continue
        freed += st.st_size
        temps += 1
    return {"tombstoned_deleted": len(due), "orphans_deleted": orphans, "orphans_kept": kept,
            "temp_deleted": temps, "bytes_freed": freed}


def verify(store: PackStore, repos=None) -> dict:
    """Re-hash every pack (of ``repos``, default all) and check that every index row and snapshot
    chunk resolves to a live pack that holds it. Returns ``{packs_checked, bytes_checked,
    index_rows, snapshots, problems: [{repo, pack, problem}], ok}``."""
    repo_filter = sorted(repos) if repos else None
    scope = "(?::VARCHAR[] IS NULL OR list_contains(?, {col}))"
    args = [repo_filter, repo_filter]
    with store.state.connect() as conn:
        packs = conn.execute(
            f"SELECT pack_key, repo, state FROM packs WHERE {scope.format(col='repo')} ORDER BY repo, pack_key", args
        ).fetchall()
        held_by_pack = dict(conn.execute(
            f"SELECT pack_key, list(object_id) FROM pack_index WHERE {scope.format(col='repo')} GROUP BY pack_key",
            args,
        ).fetchall())
        index_rows = conn.execute(f"SELECT count(*) FROM pack_index WHERE {scope.format(col='repo')}",
                                  args).fetchall()[0][0]
        dangling = conn.execute(
            f"""SELECT t.repo, t.pack_key, t.what, count(*) FROM
                  (SELECT repo, pack_key, 'index rows' AS what FROM pack_index
                   UNION ALL SELECT repo, pack_key, 'snapshots' AS what FROM snapshots) t
                LEFT JOIN packs p ON p.pack_key = t.pack_key AND p.state = 'live'
                WHERE p.pack_key IS NULL AND {scope.format(col='t.repo')} GROUP BY ALL ORDER BY ALL""", args
        ).fetchall()
        unindexed = conn.execute(
            f"""SELECT s.repo, s.pack_key, s.session_key, count(*) FROM
                  (SELECT repo, pack_key, session_key, unnest(chunks) AS object_id FROM snapshots
                   WHERE {scope.format(col='repo')}) s
                LEFT JOIN pack_index i ON i.repo = s.repo AND i.object_id = s.object_id
                WHERE i.object_id IS NULL GROUP BY ALL ORDER BY ALL""", args
        ).fetchall()
        snapshots = conn.execute(f"SELECT count(*) FROM snapshots WHERE {scope.format(col='repo')}",
                                 args).fetchall()[0][0]
    problems = []
    checked = nbytes = 0
    for key, repo, state in packs:
        name = Path(f"{key.partition(':')[2]}{PACK_SUFFIX}")
        try:
            with store.files.open(key) as f:
                listing = scan_pack_file(f, name, key)
        except FileNotFoundError:
            if state == "live":
                problems.append({"repo": repo, "pack": key, "problem": f"live pack file {name} is missing"})
            continue
        except PackError as exc:
            problems.append({"repo": repo, "pack": key, "problem": str(exc)})
            continue
        checked += 1
        nbytes += listing.bytes
        held = {e.object_id for e in listing.objects}
        absent = [oid for oid in held_by_pack.get(key, []) if oid not in held]
        if absent:
            problems.append({"repo": repo, "pack": key,
                             "problem": f"{len(absent)} indexed objects are not in the pack, e.g. {absent[0]}"})
    for repo, key, what, count in dangling:
        problems.append({"repo": repo, "pack": key, "problem": f"{count} {what} point to a pack that is not live"})
    for repo, key, session_key, count in unindexed:
        problems.append({"repo": repo, "pack": key,
                         "problem": f"{count} chunks of {session_key} are not in the index"})
    return {"packs_checked": checked, "bytes_checked": nbytes, "index_rows": int(index_rows),
            "snapshots": int(snapshots), "problems": problems, "ok": not problems}

