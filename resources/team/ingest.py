"""The central side of a team deployment: run the processors over the session versions in pushed packs.

`ingest_manifests` takes manifests (``resources/team/manifests.py``) and, for each pack not ingested
before (by any manifest: a pack two machines pushed is read once):
1. adopts it into this deployment's archive (`adopt_pack`: verified against its key, indexed);
2. runs each processor over each session version in it that the processor has not seen, from the
   bytes of the pack: the version is written to a scratch file (deleted right after) and the
   processor reads that file as it reads a local session file. A version that extends one already
   processed (its chunks start with that version's chunks) is read from where the processor stopped,
   as a grown local file is; the scratch file then holds only the new tail, at its real offsets
   (sparse before), so offsets in rows and ids are those of the original file. A version of a source
   whose files are read together (`Source.reads_tree`: OpenCode's JSON storage) is read in a scratch
   copy of its tree instead, beside the latest archived version of every other file (`_Scratch`);
3. attributes every usage row to the manifest's user and machine (the processors' ``origin``), and
   records the first user and machine of every version in ``team_snapshots``.

Processor state lives in ``session_processor_state`` under the session key, as for local files, so a
version pushed twice (or by two machines) is processed once. Each version is read by the runner
(`resources.ingest.batch.Batch`, as an `ArchivedFile`), with its rules: each processor commits after
`FILES_PER_COMMIT` versions and at the end; a failed commit is split down to the version it could not
take; only the versions committed are marked processed. A version a processor fails on (reading it, or
committing its rows) is reported and its pack and manifest are not marked, so the next run retries
them (the versions that worked are skipped then by their hash).
Nothing here reads anyone's laptop: only the bucket and this deployment's own state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pyarrow as pa

from resources.archive.adoption import adopt_pack
from resources.archive.pack_format import PackError, Snapshot
from resources.archive.packs import PackStore
from resources.archive.restore import safe_relative
from resources.ingest.batch import Batch
from resources.ingest.contract import SessionProcessor
from resources.ingest.files_to_read import ArchivedFile
from resources.ingest.run_stats import count_stat, empty_stats
from resources.sources import agent_of, path_under_root, source_type
from resources.state.store import ProcessorFileState, insert_rows, json_list, load_processor_state, transaction
from resources.team.manifests import Manifest

FILES_PER_COMMIT = 1000
log = logging.getLogger(__name__)


@dataclass
class _Seen:
    """What a processor last processed of one session: the version, and where it stopped."""

    file_hash: str
    size: int
    byte_offset: int
    chunks: tuple[str, ...] | None
    items: int


def new_manifests(store: PackStore, manifests: Sequence[Manifest]) -> list[Manifest]:
    """The manifests among ``manifests`` not ingested yet."""
    with store.state.connect() as conn:
        done = {r[0] for r in conn.execute(
            "SELECT manifest FROM team_manifests WHERE list_contains(?, manifest)",
            [[m.name for m in manifests]]).fetchall()}
    return [m for m in manifests if m.name not in done]


def ingest_manifests(manifests: Sequence[Manifest], processors: Sequence[SessionProcessor], store: PackStore,
                     logger: logging.Logger | None = None) -> dict:
    """Ingest the packs of ``manifests`` (in order); returns ``{processor: stats, "team": counts}``.

    ``team`` counts manifests and packs ingested and skipped (already ingested), versions read,
    bytes of pushed packs read, and lists ``failed_packs``.
    """
    run = _Run(processors, store, logger or log)
    try:
        for manifest in manifests:
            run.manifest(manifest)
        run.flush()
    finally:
        run.scratch.close()
    for p in processors:
        run.stats[p.name].update(p.end_run())
    return {**run.stats, "team": run.team}


class _Run:
    def __init__(self, processors: Sequence[SessionProcessor], store: PackStore, logger: logging.Logger):
        self.processors, self.store, self.logger = list(processors), store, logger
        self.stats = {p.name: empty_stats() for p in processors}
        self.team = {"manifests": 0, "manifests_skipped": 0, "packs": 0, "packs_skipped": 0, "versions": 0,
                     "pack_bytes": 0, "failed_packs": []}
        self.seen: dict[str, dict[str, _Seen | None]] = {p.name: {} for p in processors}
        """Per processor and session key: what it last processed (None: nothing yet)."""
        self.batches = {p.name: Batch(p, self.stats[p.name], logger) for p in processors}
        self.read: dict[str, list[tuple[str, str, str]]] = {p.name: [] for p in processors}
        """Per processor: ``(session_key, file_hash, pack_key)`` of each version in its batch."""
        self.pending_manifests: list[Manifest] = []
        self.pending_packs: list[tuple[str, Manifest]] = []
        self.pending_versions: list[tuple[Snapshot, Manifest, str]] = []
        self.packs_this_run: set[str] = set()
        self.scratch = contextlib.ExitStack()
        """The scratch folders of the packs read since the last commit (and their readers): a commit split
        reads their versions again."""
        self.files = 0
        for p in processors:
            p.begin_run()

    def manifest(self, manifest: Manifest) -> None:
        # One connection for the manifest, as the runner holds one for up to 1,000 files: opening one
        # costs ~0.1 s, which per pack was a third of a team ingest. Each adoption is its own transaction.
        with self.store.state.connect() as conn:
            if conn.execute("SELECT 1 FROM team_manifests WHERE manifest = ?", [manifest.name]).fetchone():
                self.team["manifests_skipped"] += 1
                return
            done = {r[0] for r in conn.execute("SELECT pack_key FROM team_packs WHERE list_contains(?, pack_key)",
                                               [[e.key for e in manifest.packs]]).fetchall()}
            failed = False
            for entry in manifest.packs:
                if entry.key in done or entry.key in self.packs_this_run:
                    self.team["packs_skipped"] += 1
                    continue
                failed |= not self.pack(conn, manifest, entry.key, entry.repo, entry.bytes)
        if not failed:
            self.pending_manifests.append(manifest)
        self.team["manifests"] += 1
        if self.files >= FILES_PER_COMMIT:
            self.flush()

    def pack(self, conn, manifest: Manifest, key: str, repo: str, nbytes: int) -> bool:
        """Adopt and process one pack; False when it or one of its versions failed (not marked: retried)."""
        origin = {"user_name": manifest.user, "machine": manifest.machine}
        with self.store.reader(repo) as reader:
            try:
                snapshots = adopt_pack(key, repo, reader, conn)
                sizes = self._prefetch(conn, repo, snapshots, reader)
            except (PackError, FileNotFoundError, OSError) as exc:
                self.team["failed_packs"].append({"pack": key, "manifest": manifest.name,
                                                  "error": f"{type(exc).__name__}: {exc}"})
                self.logger.warning("pack %s of %s: %s (retried next run)", key, manifest.name, exc)
                return False
            self.packs_this_run.add(key)
            self.team["packs"] += 1
            self.team["pack_bytes"] += nbytes
            return self._versions(conn, manifest, key, repo, snapshots, reader, origin, sizes)

    def _versions(self, conn, manifest: Manifest, key: str, repo: str, snapshots: list[Snapshot], reader,
                  origin: dict, sizes: dict[str, int]) -> bool:
        ok = True
        self.store.files.write_dir.mkdir(parents=True, exist_ok=True)
        folder = self.scratch.enter_context(
            tempfile.TemporaryDirectory(prefix=".team-ingest-", dir=self.store.files.write_dir))
        self.scratch.callback(reader.close)  # a split re-reads a version: the reader opens its packs again
        scratch = _Scratch(Path(folder), conn, reader, repo)
        for snap in snapshots:
            self.team["versions"] += 1
            for p in self.processors:
                version = ArchivedFile(snap, repo, lambda s, start: scratch.version(s, start, sizes))
                ok &= self._process(conn, p, key, version, origin)
            self.pending_versions.append((snap, manifest, key))
            self.files += 1
        if ok:
            self.pending_packs.append((key, manifest))
        return ok

    def _process(self, conn, processor: SessionProcessor, pack_key: str, version: ArchivedFile,
                 origin: dict) -> bool:
        snap, repo = version.snap, version.project
        stats = self.stats[processor.name]
        count_stat(stats, repo, "scanned")
        prev = self.seen[processor.name][snap.session_key]
        if prev is not None and prev.file_hash == snap.file_hash:
            count_stat(stats, repo, "skipped")
            return True
        grown = (prev is not None and prev.chunks is not None and len(snap.chunks) > len(prev.chunks)
                 and snap.chunks[: len(prev.chunks)] == prev.chunks and source_type(snap.session_key).append_only)
        mark = self.batches[processor.name].read(conn, version, snap.file_hash, prev.byte_offset if grown else 0,
                                                 prev.items if grown else 0, origin)
        if mark is None:  # reported by the batch; the pack is read again next run
            return False
        self.seen[processor.name][snap.session_key] = _Seen(snap.file_hash, snap.size, mark.byte_offset,
                                                            snap.chunks, mark.items_extracted)
        self.read[processor.name].append((snap.session_key, snap.file_hash, pack_key))
        return True

    def _prefetch(self, conn, repo: str, snapshots: list[Snapshot], reader) -> dict[str, int]:
        """On ``conn``: each processor's state of these sessions (and the chunks of the version it
        saw), where the versions' chunks are (loaded into ``reader``); returns the chunks' sizes."""
        keys = sorted({s.session_key for s in snapshots})
        chunk_ids = sorted({c for s in snapshots for c in s.chunks})
        for p in self.processors:
            seen = self.seen[p.name]
            states: dict[str, ProcessorFileState] = load_processor_state(
                conn, p.name, [k for k in keys if k not in seen])
            chunks = {(k, h): tuple(c) for k, h, c in conn.execute(
                "SELECT session_key, file_hash, chunks FROM snapshots WHERE list_contains(?, session_key)",
                [list(states)]).fetchall()} if states else {}
            for key in keys:
                if key not in seen:
                    st = states.get(key)
                    seen[key] = None if st is None else _Seen(
                        st.file_hash, st.file_size, st.byte_offset, chunks.get((key, st.file_hash)),
                        st.items_extracted)
        rows = _indexed(conn, repo, chunk_ids)
        reader.load({oid: key for oid, key, _ in rows})
        return {oid: size for oid, _, size in rows}

    def flush(self) -> None:
        """Commit every processor, then mark the versions, packs and manifests they covered."""
        if not (self.pending_versions or self.pending_manifests):
            return
        now = datetime.now(UTC)
        with self.store.state.connect() as conn:
            failed = self._commit(conn)
            self.pending_packs = [(k, m) for k, m in self.pending_packs if k not in failed]
            self.pending_manifests = [m for m in self.pending_manifests if not any(e.key in failed for e in m.packs)]
            with transaction(conn):
                _insert(conn, "team_snapshots", ["session_key", "file_hash", "user_name", "machine", "pack_key"],
                        [[s.session_key, s.file_hash, m.user, m.machine, key] for s, m, key in self.pending_versions])
                _insert(conn, "team_packs", ["pack_key", "manifest", "user_name", "machine", "ingested_at"],
                        [[key, m.name, m.user, m.machine, now] for key, m in self.pending_packs])
                _insert(conn, "team_manifests", ["manifest", "user_name", "machine", "packs", "ingested_at"],
                        [[m.name, m.user, m.machine, len(m.packs), now] for m in self.pending_manifests])
        self.pending_versions, self.pending_packs, self.pending_manifests = [], [], []
        self.files = 0
        self.scratch.close()

    def _commit(self, conn) -> set[str]:
        """Commit every processor's batch; the keys of the packs holding a version a commit could not take
        (listed in ``failed_packs``; what a processor last saw of those sessions is read again)."""
        failed: dict[str, str] = {}
        for p in self.processors:
            committed = {(m.session_file, m.file_hash) for m in self.batches[p.name].commit(conn)}
            for session_key, file_hash, pack_key in self.read[p.name]:
                if (session_key, file_hash) not in committed:
                    failed.setdefault(pack_key, session_key)
                    self.seen[p.name].pop(session_key, None)
            self.read[p.name] = []
        for pack_key, session_key in failed.items():
            self.team["failed_packs"].append({"pack": pack_key, "error": f"{session_key}: its rows were not committed"})
        return set(failed)


class _Scratch:
    """Where the versions of one pack of ``repo`` are written for the processors to read, in ``folder``
    (deleted with it).

    A version is written alone, named as its file (adapters tell formats apart by name: .json, .db),
    and deleted once read. A version of a source that `reads_tree` is written instead at its path
    under its agent's root in a copy of the tree: the first time one is asked for, every latest
    archived version of ``repo``'s files of that agent is written there (on ``conn``, through
    ``reader``; one chunk in memory at a time), as the pack's versions, just adopted, are the latest.
    The copy is left in place: the versions after it read it as their neighbours.
    """

    def __init__(self, folder: Path, conn, reader, repo: str):
        self.folder, self.conn, self.reader, self.repo = folder, conn, reader, repo
        self.trees: dict[str, dict[str, str]] = {}
        """Per agent: the file hash of each session key its tree copy holds."""

    @contextmanager
    def version(self, snap: Snapshot, start: int, sizes: dict[str, int]) -> Iterator[Path]:
        """The path of ``snap``'s bytes from ``start`` on, at their offsets (see `_write_from`)."""
        if not source_type(snap.session_key).reads_tree:
            path = self.folder / PurePosixPath(snap.session_key).name
            try:
                _write_from(self.reader, snap, start, sizes, path)
                yield path
            finally:
                path.unlink(missing_ok=True)
            return
        tree = self._tree(agent_of(snap.session_key))
        if tree.get(snap.session_key) != snap.file_hash:
            self._write_in_tree(snap, tree)  # in full: the versions after it read it as a neighbour
        yield self._tree_path(snap.session_key)

    def _tree(self, agent: str) -> dict[str, str]:
        if agent not in self.trees:
            latest = [s for k, s in PackStore.latest_snapshots(self.conn, self.repo).items() if agent_of(k) == agent]
            rows = _indexed(self.conn, self.repo, sorted({c for s in latest for c in s.chunks}))
            self.reader.load({oid: key for oid, key, _ in rows})
            tree: dict[str, str] = {}
            for snap in latest:
                self._write_in_tree(snap, tree)
            self.trees[agent] = tree  # only once whole: a failed copy is made again for the next version
        return self.trees[agent]

    def _tree_path(self, session_key: str) -> Path:
        return self.folder / "tree" / safe_relative(path_under_root(session_key))

    def _write_in_tree(self, snap: Snapshot, tree: dict[str, str]) -> None:
        path = self._tree_path(snap.session_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_from(self.reader, snap, 0, {}, path)
        tree[snap.session_key] = snap.file_hash


def _indexed(conn, repo: str, object_ids: list[str]) -> list[tuple[str, str, int]]:
    """``(object_id, pack_key, size)`` of the ones of ``object_ids`` that ``repo``'s index holds."""
    return conn.execute(
        "SELECT object_id, pack_key, size FROM pack_index WHERE repo = ? "
        "AND object_id IN (SELECT unnest(?::JSON::VARCHAR[]))",
        [repo, json_list(object_ids)]).fetchall()


def _insert(conn, table: str, columns: list[str], rows: list[list]) -> None:
    """`insert_rows` of ``rows`` (lists in the order of ``columns``); keeps existing keys."""
    insert_rows(conn, table, pa.Table.from_pylist([dict(zip(columns, r, strict=True)) for r in rows]))


def _write_from(reader, snap: Snapshot, start: int, sizes: dict[str, int], path: Path) -> None:
    """Write the bytes of ``snap`` from ``start`` on to ``path``, at their offsets (a sparse file
    before ``start``); ``sizes`` are the chunks' raw sizes. Every chunk read is checked against its id."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as out:
        pos = 0
        for chunk_id in snap.chunks:
            if start and chunk_id in sizes and pos + sizes[chunk_id] <= start:
                pos += sizes[chunk_id]  # wholly before where the processor resumes: never read
                continue
            data = reader.get(chunk_id).raw()
            out.seek(pos)
            out.write(data)
            pos += len(data)
        if pos != snap.size:
            raise PackError(f"{snap.session_key}: its chunks add up to {pos} bytes, not {snap.size}")
        out.truncate(snap.size)
