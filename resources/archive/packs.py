"""PackStore: the content-addressed archive of session files (packs on disk, index in DuckDB).

Objects are chunks of session bytes (`resources.archive.pack_format`); a snapshot is one version of one file
(its ordered chunk ids). Each archive commit writes one pack per project ("repo"), then registers it
in one DuckDB transaction (`resources.archive.pack_index`). GC, the sweep and verification live in
`resources.archive.gc`, adoption of pushed packs in `resources.archive.adoption`; this module reads
and writes packs.

Every DuckDB access goes through `StateStore.connect()`, one short unit of work at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from resources.archive import pack_index
from resources.archive.index_rows import ArchivedVersion, Observation, PendingObject
from resources.archive.pack_files import BucketPackFiles, LocalPackFiles
from resources.archive.pack_format import (
    ObjectEntry,
    ObjectRef,
    PackCorrupt,
    PackError,
    PackListing,
    Snapshot,
    StoredObject,
    fsync_dir,
    scan_pack_file,
    write_pack,
)
from resources.archive.restore import UnsafeTarget, restore_file, safe_relative, write_version
from resources.config.settings import Settings
from resources.state.store import StateStore, json_list


class ObjectReader:
    """Objects of one repo, located through the index and read from packs verified on first use.

    Each pack is hashed once, in full, when the reader first needs it, and kept open, so a sweep
    deleting the file afterwards does not break the reads. When a pack has vanished between the
    index read and the open (GC moved its objects), the index is re-read once.
    """

    def __init__(self, store: PackStore, repo: str):
        self.store = store
        self.repo = repo
        self._where: dict[str, tuple[str, ObjectEntry]] = {}
        self._files: dict[str, object] = {}
        self._listings: dict[str, dict[str, ObjectEntry]] = {}

    def locate(self, object_ids: Iterable[str]) -> None:
        wanted = sorted(set(object_ids) - self._where.keys())
        if wanted:
            self._load(self.store.index_lookup(self.repo, wanted), wanted, retry=True)

    def load(self, where: dict[str, str]) -> None:
        """Make objects readable from the packs an index read already named: ``{object_id: pack_key}``."""
        self._load(where, sorted(where), retry=True)

    def _load(self, where: dict[str, str], wanted: list[str], retry: bool) -> None:
        missing = [oid for oid in wanted if oid not in where]
        if missing:
            raise PackError(f"{self.repo}: {len(missing)} objects are not in the archive index, e.g. {missing[0]}")
        by_pack: dict[str, list[str]] = {}
        for oid in wanted:
            by_pack.setdefault(where[oid], []).append(oid)
        for key, oids in sorted(by_pack.items()):
            try:
                listing = self._open(key)
            except FileNotFoundError:
                if not retry:
                    raise PackError(f"{self.repo}: pack {key} is missing from {self.store.files.describe()}") from None
                self._load(self.store.index_lookup(self.repo, oids), oids, retry=False)
                continue
            for oid in oids:
                if oid not in listing:
                    raise PackCorrupt(f"pack {key} does not hold {oid}, although the index says so")
                self._where[oid] = (key, listing[oid])

    def _open(self, key: str) -> dict[str, ObjectEntry]:
        if key not in self._listings:
            self.open_pack(key)
        return self._listings[key]

    def open_pack(self, key: str) -> PackListing:
        """Open and verify pack ``key`` (kept open until close(), see the class docstring); its listing."""
        f = self.store.files.open(key)
        try:
            listing = scan_pack_file(f, Path(BucketPackFiles.name(key)), key)
        except BaseException:
            f.close()
            raise
        if key in self._files:
            self._files[key].close()
        self._files[key] = f
        self._listings[key] = {e.object_id: e for e in listing.objects}
        return listing

    def ref(self, object_id: str) -> ObjectRef:
        """The object where it lies, to be streamed into another pack."""
        if object_id not in self._where:
            self.locate([object_id])
        key, entry = self._where[object_id]
        return ObjectRef(entry, self._files[key])

    def get(self, object_id: str) -> StoredObject:
        """The object's stored bytes, loaded."""
        return self.ref(object_id).load()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._listings.clear()
        self._where.clear()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PackStore:
    """Packs under ``packs_dir`` (or in ``files``, a bucket) and their index in ``state``; tombstones are
    swept after ``grace_sec``. With a bucket, ``packs_dir`` holds only temp files."""

    def __init__(self, packs_dir: Path | str, state: StateStore, grace_sec: float = 3600.0,
                 files: LocalPackFiles | BucketPackFiles | None = None):
        self.packs_dir = Path(packs_dir)
        self.state = state
        self.grace_sec = grace_sec
        self.files = files or LocalPackFiles(self.packs_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> PackStore:
        """Packs under ``SESSIONLAKE_STORAGE_URI``'s ``packs/`` when set, else in the home's ``packs/``."""
        files = BucketPackFiles(settings.storage.child("packs").blobs(), settings.packs_dir) \
            if settings.storage_uri else None
        return cls(settings.packs_dir, StateStore.from_settings(settings), settings.pack_gc_grace_sec, files)

    def write_pack(self, objects: Iterable[StoredObject | ObjectRef], object_count: int,
                   snapshots: Iterable[Snapshot], snapshot_count: int, sync_dir: bool = True) -> tuple[str, int]:
        """Write a pack (`write_pack`) where this store keeps them; returns ``(key, bytes)`` once it is durable
        (not ``sync_dir``: once the caller has fsynced the local folder, `PackWriter.finish`)."""
        key, path, nbytes = write_pack(self.files.write_dir, objects, object_count, snapshots, snapshot_count,
                                       sync_dir)
        self.files.publish(key, path)
        return key, nbytes

    # -- index reads ------------------------------------------------------------------------------

    def index_lookup(self, repo: str, object_ids: Sequence[str]) -> dict[str, str]:
        """``{object_id: pack_key}`` for the ids the index knows in ``repo``."""
        with self.state.connect() as conn:
            rows = conn.execute(
                "SELECT object_id, pack_key FROM pack_index WHERE repo = ? "
                "AND object_id IN (SELECT unnest(?::JSON::VARCHAR[]))",
                [repo, json_list(list(object_ids))],
            ).fetchall()
        return dict(rows)

    def repos(self) -> list[str]:
        with self.state.connect() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT repo FROM packs ORDER BY repo").fetchall()]

    def live_packs(self, repo: str | None = None, include_tombstoned: bool = False) -> list[dict]:
        """Pack rows (key, repo, bytes, object_count, snapshot_count, created_at, state), oldest first:
        the live ones, or all rows still on record with ``include_tombstoned``."""
        sql = """SELECT pack_key, repo, bytes, object_count, snapshot_count, created_at, state FROM packs
                 WHERE (state = 'live' OR ?) AND (? IS NULL OR repo = ?) ORDER BY repo, created_at, pack_key"""
        with self.state.connect() as conn:
            rows = conn.execute(sql, [include_tombstoned, repo, repo]).fetchall()
        cols = ("key", "repo", "bytes", "object_count", "snapshot_count", "created_at", "state")
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def pack_counts(self) -> dict[str, dict]:
        """Per repo: ``live`` and ``tombstoned`` pack counts and ``live_digest``, a digest of the live
        pack keys that changes whenever an ingest or a GC changes the repo's packs."""
        with self.state.connect() as conn:
            rows = conn.execute(
                """SELECT repo, count(*) FILTER (state = 'live'), count(*) FILTER (state = 'tombstoned'),
                          coalesce(list_sort(list(pack_key) FILTER (state = 'live')), [])
                   FROM packs GROUP BY repo ORDER BY repo"""
            ).fetchall()
        return {
            repo: {"live": int(live), "tombstoned": int(dead),
                   "live_digest": hashlib.blake2b("\n".join(keys).encode(), digest_size=8).hexdigest()}
            for repo, live, dead, keys in rows
        }

    def versions(self, repo: str, session_key: str | None = None) -> list[ArchivedVersion]:
        """Archived versions of ``repo`` (or of one session), by session key then time."""
        with self.state.connect() as conn:
            return self._versions(conn, repo, session_key)

    @staticmethod
    def _versions(conn, repo: str, session_key: str | None) -> list[ArchivedVersion]:
        sql = """SELECT session_key, size, file_hash, mtime_ns, chunks, pack_key, archived_at FROM snapshots
                 WHERE repo = ? AND (? IS NULL OR session_key = ?)
                 ORDER BY session_key, mtime_ns, archived_at, file_hash"""
        rows = conn.execute(sql, [repo, session_key, session_key]).fetchall()
        return [ArchivedVersion(Snapshot(r[0], r[1], r[2], r[3], tuple(r[4])), r[5], r[6]) for r in rows]

    def origins(self, repo: str) -> dict[tuple[str, str], str]:
        """``{(session_key, file_hash): "user@machine"}`` of the versions of ``repo`` that came in a pack another
        machine pushed (the first to push each, ``team_snapshots``); a version not in it is this archive's own."""
        with self.state.connect() as conn:
            rows = conn.execute(
                """SELECT t.session_key, t.file_hash, t.user_name || '@' || t.machine FROM team_snapshots t
                   JOIN snapshots s USING (session_key, file_hash) WHERE s.repo = ?""", [repo]).fetchall()
        return {(k, h): who for k, h, who in rows}

    def timeline(self, repo: str, session_key: str | None = None) -> list[Observation]:
        """Every observation of ``repo``'s versions (or one session's), by session key then time seen."""
        with self.state.connect() as conn:
            return self._timeline(conn, repo, session_key)

    @staticmethod
    def _timeline(conn, repo: str, session_key: str | None) -> list[Observation]:
        sql = """SELECT o.session_key, s.size, o.file_hash, o.mtime_ns, s.chunks, o.observed_at
                 FROM snapshot_observations o JOIN snapshots s USING (repo, session_key, file_hash)
                 WHERE o.repo = ? AND (? IS NULL OR o.session_key = ?)
                 ORDER BY o.session_key, o.observed_at, o.mtime_ns"""
        rows = conn.execute(sql, [repo, session_key, session_key]).fetchall()
        return [Observation(Snapshot(r[0], r[1], r[2], r[3], tuple(r[4])), r[5]) for r in rows]

    def repo_stats(self, repo: str) -> dict:
        """`repos_stats` of one repo (zeros for a repo with nothing archived)."""
        return self.repos_stats([repo])[repo]

    def repos_stats(self, repos: Sequence[str]) -> dict[str, dict]:
        """Numbers for metadata, per repo, in one connection and three grouped queries: live packs and
        their bytes, objects, raw and stored object bytes, sessions, versions and their bytes;
        ``dedup_ratio`` = version bytes / unique object bytes and ``compression_ratio`` = unique object
        bytes / stored bytes."""
        repos = list(repos)
        sql = {
            "packs": "SELECT repo, count(*), coalesce(sum(bytes), 0) FROM packs "
                     "WHERE list_contains($repos, repo) AND state = 'live' GROUP BY repo",
            "objects": "SELECT repo, count(*), coalesce(sum(size), 0), coalesce(sum(stored_size), 0) FROM pack_index "
                       "WHERE list_contains($repos, repo) GROUP BY repo",
            "versions": "SELECT repo, count(*), coalesce(sum(size), 0), count(DISTINCT session_key) FROM snapshots "
                        "WHERE list_contains($repos, repo) GROUP BY repo",
        }
        with self.state.connect() as conn:
            found = {name: {r[0]: r[1:] for r in conn.execute(q, {"repos": repos}).fetchall()}
                     for name, q in sql.items()}
        out = {}
        for repo in repos:
            packs, pack_bytes = found["packs"].get(repo, (0, 0))
            objects, raw, stored = found["objects"].get(repo, (0, 0, 0))
            versions, version_bytes, sessions = found["versions"].get(repo, (0, 0, 0))
            out[repo] = {
                "live_packs": int(packs), "pack_bytes": int(pack_bytes), "objects": int(objects),
                "object_bytes": int(raw), "stored_bytes": int(stored), "sessions": int(sessions),
                "versions": int(versions), "version_bytes": int(version_bytes),
                "dedup_ratio": round(version_bytes / raw, 3) if raw else 1.0,
                "compression_ratio": round(raw / stored, 3) if stored else 1.0,
            }
        return out

    # -- writes (the archive processor) -----------------------------------------------------------

    @staticmethod
    def observed_repos(conn: duckdb.DuckDBPyConnection) -> set[str]:
        """The repos with any version seen (`latest_snapshots` of any other is empty), in one query."""
        return {r[0] for r in conn.execute("SELECT DISTINCT repo FROM snapshot_observations").fetchall()}

    @staticmethod
    def latest_snapshots(conn: duckdb.DuckDBPyConnection, repo: str) -> dict[str, Snapshot]:
        """The version of each session file of ``repo`` seen last, by session key, so an ingest stores
        only the new tail of a grown file."""
        return latest_observed(PackStore._timeline(conn, repo, None))

    def add_packs(
        self,
        conn: duckdb.DuckDBPyConnection,
        batches: Mapping[str, tuple[Sequence[PendingObject], Sequence[Snapshot]]],
        load: Callable[[str], StoredObject | ObjectRef],
    ) -> dict[str, dict]:
        """Write, per repo of ``batches`` (``{repo: (objects, snapshots)}``), one pack with the objects and
        snapshots it does not hold yet, then register them all.

        ``load(object_id)`` returns an object's stored form (or a reference to stream it from); it is
        called once per new object, in id order. Every one of the snapshots is also recorded as an
        observation (the timeline), new or not. What the index already holds is looked up once for
        every repo, and every pack is registered in ONE transaction (three inserts, however many
        projects: one each per pack made 300 statements of a 100-project ingest), after every pack
        file is durable (each file fsynced, then the folder once for all their names). Returns
        ``{repo: {key, bytes, object_count, snapshot_count}}`` for the repos that needed a pack.
        """
        known_objects = pack_index.known_objects(conn, {r: [o.object_id for o in b[0]] for r, b in batches.items()})
        known_versions = pack_index.known_versions(conn, {r: b[1] for r, b in batches.items()})
        now = datetime.now(UTC)
        packs: list[pack_index.PackRows] = []
        for repo, (objects, snapshots) in sorted(batches.items()):
            have, recorded = known_objects.get(repo, set()), known_versions.get(repo, set())
            new_objects = sorted({o.object_id: o for o in objects if o.object_id not in have}.values(),
                                 key=lambda o: o.object_id)
            new_snapshots = sorted({(s.session_key, s.file_hash): s for s in snapshots
                                    if (s.session_key, s.file_hash) not in recorded}.values(), key=Snapshot.sort_key)
            if not new_objects and not new_snapshots:  # known versions seen again (a file reverted): the timeline
                continue
            key, nbytes = self.write_pack((load(o.object_id) for o in new_objects), len(new_objects),
                                          new_snapshots, len(new_snapshots), sync_dir=False)
            packs.append(pack_index.PackRows(repo, key, nbytes, new_objects, new_snapshots))
        if packs and not self.files.in_bucket:  # one fsync makes every new pack's name durable
            fsync_dir(self.files.write_dir)
        seen = {repo: snapshots for repo, (_, snapshots) in batches.items()}
        if packs:
            pack_index.register(conn, packs, seen=seen, now=now, revive=True)
        else:
            pack_index.observe(conn, seen, now)
        return {p.repo: {"key": p.key, "bytes": p.nbytes, "object_count": len(p.objects),
                         "snapshot_count": len(p.snapshots)} for p in packs}

    # -- reads: fetch and restore -----------------------------------------------------------------

    def reader(self, repo: str) -> ObjectReader:
        return ObjectReader(self, repo)

    def fetch(self, repo: str, want: Iterable[str | tuple[str, str]], have: Iterable[str] = (),
              dest_dir: Path | str | None = None) -> dict:
        """Write a pack with the wanted versions' snapshots and their objects, minus ``have``.

        ``want`` holds session keys (every version) or ``(session_key, file_hash)`` pairs. The pack
        goes to ``dest_dir`` (default ``<packs_dir>/fetched``). Returns ``{key, path, bytes,
        object_count, snapshot_count}``; the same request gives the same pack before and after GC.
        """
        by_key: dict[str, list[Snapshot]] = {}
        for v in self.versions(repo):
            by_key.setdefault(v.snapshot.session_key, []).append(v.snapshot)
        chosen: dict[tuple[str, str], Snapshot] = {}
        for item in want:
            session_key, file_hash = (item, None) if isinstance(item, str) else item
            matches = [s for s in by_key.get(session_key, []) if file_hash in (None, s.file_hash)]
            if not matches:
                raise PackError(f"{repo}: no archived version of {session_key}"
                                + (f" with hash {file_hash}" if file_hash else ""))
            chosen.update(((s.session_key, s.file_hash), s) for s in matches)
        snapshots = sorted(chosen.values(), key=Snapshot.sort_key)
        ids = sorted({c for s in snapshots for c in s.chunks} - set(have))
        with self.reader(repo) as reader:
            reader.locate(ids)
            key, path, nbytes = write_pack(Path(dest_dir) if dest_dir else self.packs_dir / "fetched",
                                           (reader.ref(i) for i in ids), len(ids), snapshots, len(snapshots))
        return {"key": key, "path": str(path), "bytes": nbytes, "object_count": len(ids),
                "snapshot_count": len(snapshots)}

    def restore(self, repo: str, dest_dir: Path | str, session_key: str | None = None,
                at: datetime | None = None) -> list[dict]:
        """Rebuild the files of ``repo`` (or one session) under ``dest_dir/<session key>``, byte for byte.

        Each file gets the version seen last (default), or with ``at`` the version that was on disk
        then: of the observations whose mtime is not after ``at``, the one with the latest mtime. A file
        that went A, B, A restores as A. A restored file is hash-checked before it is renamed into
        place and gets the mtime it had when it was seen.
        An existing file with other content is never overwritten: it is reported as ``conflict``.
        Nothing is written outside ``dest_dir``: every folder below it is opened without following
        symlinks, so a file whose folder (or the file itself) is a symlink is left alone and reported
        as ``refused``, with a ``reason``. Returns one ``{session_key, path, size, file_hash, status}``
        per file, status one of ``restored``, ``identical``, ``conflict``, ``refused``.
        """
        at_ns = int(at.timestamp() * 1_000_000_000) if at is not None else None
        with self.state.connect() as conn:  # one short connection: the versions and where their chunks are
            timeline = self._timeline(conn, repo, session_key)
            where = dict(conn.execute(
                """SELECT object_id, pack_key FROM pack_index WHERE repo = ? AND object_id IN
                   (SELECT unnest(chunks) FROM snapshots WHERE repo = ? AND (? IS NULL OR session_key = ?))""",
                [repo, repo, session_key, session_key],
            ).fetchall())
        if at_ns is None:
            latest = latest_observed(timeline)
        else:
            on_disk = sorted((o for o in timeline if o.snapshot.mtime_ns <= at_ns),
                             key=lambda o: (o.snapshot.mtime_ns, o.observed_at))
            latest = {o.snapshot.session_key: o.snapshot for o in on_disk}  # the last one wins
        if not latest:
            what = session_key or f"project {repo}"
            raise PackError(f"no archived version of {what}" + (f" at or before {at.isoformat()}" if at else ""))
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        results = []
        dest_fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with self.reader(repo) as reader:
                wanted = {c for s in latest.values() for c in s.chunks}
                reader.load({oid: key for oid, key in where.items() if oid in wanted})
                reader.locate(wanted)  # reports any chunk the index lost
                for snap in latest.values():
                    rel = safe_relative(snap.session_key)
                    result = {"session_key": snap.session_key, "path": str(dest_dir / rel), "size": snap.size,
                              "file_hash": snap.file_hash}
                    try:
                        result["status"] = restore_file(reader, snap, dest_fd, rel)
                    except UnsafeTarget as exc:
                        result.update(status="refused", reason=str(exc))
                    results.append(result)
        finally:
            os.close(dest_fd)
        return results

    def export_versions(self, versions: Sequence[tuple[str, Snapshot]],
                        dest_dir: Path | str) -> Iterator[tuple[str, Snapshot, Path]]:
        """Write each of ``versions`` (``(repo, snapshot)`` pairs), in the order given, to a file under
        ``dest_dir``, hash-checked, and yield ``(repo, snapshot, path)``; each file is deleted before the
        next one is written, so the archive never sits on disk twice. One reader per repo is kept open
        for the whole walk, so each pack is verified once however the repos interleave."""
        wanted: dict[str, set[str]] = {}
        for repo, snap in versions:
            wanted.setdefault(repo, set()).update(snap.chunks)
        with contextlib.ExitStack() as stack:
            readers = {repo: stack.enter_context(self.reader(repo)) for repo in wanted}
            for repo, chunks in wanted.items():
                readers[repo].locate(chunks)
            dest_fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY)
            stack.callback(os.close, dest_fd)
            for n, (repo, snap) in enumerate(versions):
                # the original's suffix: an adapter tells a Gemini .json or an OpenCode .db by it
                target = Path(dest_dir) / f"version-{n}{Path(snap.session_key).suffix}"
                write_version(readers[repo], snap, dest_fd, target.name)
                try:
                    yield repo, snap, target
                finally:
                    target.unlink(missing_ok=True)

    # -- maintenance (resources.archive.gc) ----------------------------------------------------------

    def gc_repo(self, repo: str) -> dict:
        """Consolidate the live packs of ``repo`` into one; see `resources.archive.gc.gc_repo`."""
        from resources.archive.gc import gc_repo

        return gc_repo(self, repo)

    def sweep(self, now: datetime | None = None) -> dict:
        """Delete tombstoned packs, orphan packs and temp files older than the grace period."""
        from resources.archive.gc import sweep

        return sweep(self, now)

    def verify(self, repos: Sequence[str] | None = None) -> dict:
        """Re-hash every pack and resolve every index row; see `resources.archive.gc.verify`."""
        from resources.archive.gc import verify

        return verify(self, repos)


def latest_observed(timeline: Iterable[Observation]) -> dict[str, Snapshot]:
    """Per session key, the version of the last observation in ``timeline`` (ordered by time seen)."""
    return {o.snapshot.session_key: o.snapshot for o in timeline}

