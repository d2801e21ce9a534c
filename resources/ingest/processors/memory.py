"""The memory processor: every prompt and answer text becomes a Lance record, threads become edges.

Agent-neutral: the file's source adapter (resources/sources/) yields `MemoryItem`s (what counts as a
prompt or answer, and how lines thread, is the adapter's: Claude Code's is in ``claude.py``).
- Each item with a ``record`` becomes one ``records`` row (tier ``episodic``), id = the item's id,
  else a hash of session key + offset.
- ``reply_to`` edges go from a record to its nearest ancestor record along the items' parents
  (skipping items without a record, e.g. tool-use lines); when the chain leaves the items read, to
  the last parent seen.
- A summary item tags every record of the session that holds its leaf (any item read in this run,
  or a stored record); when the leaf is nowhere to be found, the records of the summary's own file.
- An item the adapter cannot store (a timestamp that is not ISO-8601, a text field that is not a
  string) is malformed: counted and kept in ``malformed_lines``; the rest of the file is used.
- Records and edges are written every `FILES_PER_COMMIT` files (one ``merge_insert`` per table per
  commit: a small run is one commit, a first ingest of a huge tree a few, in bounded memory); a grown
  file is read from its stored offset only. The indexes take the run's new records once, after the
  last commit; a run of at most `EARLY_INDEX_MAX_COMMITS` commits has its first commit's records
  indexed in a thread while the next files are taken and written (the build is Lance's, outside
  Python's lock), and the rest as one more segment after the last (recall finds a record before it is
  indexed). Summary tags span commits: a summary
  whose leaf comes in a later file waits for it, tags resolved so far apply to every later record of
  their session, and what is still unresolved when the run ends goes to the summary's own session.
  Stored records re-tagged by summaries are written `RETAGGED_PER_WRITE` at a time, so no run holds
  them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from resources.ids import stable_id
from resources.ingest.beside import InThread
from resources.ingest.contract import ProcessorResult, SessionProcessor
from resources.ingest.session_files import ParseStats
from resources.memory.events import write_event
from resources.memory.lance import LanceStore
from resources.memory.schema import (
    EDGE_COLUMNS_SCHEMA,
    EDGES,
    EVENTS,
    RECORD_COLUMNS,
    RECORD_COLUMNS_SCHEMA,
    RECORDS,
    RECORDS_SCHEMA,
    edge_id,
    edge_table,
    record_table,
    sql_str,
)
from resources.sources import source_type
from resources.state.store import Connection
from resources.times import as_utc

SUMMARY_SESSIONS_PER_QUERY = 500
EARLY_INDEX_MAX_COMMITS = 3
"""Commits (the run's files over `FILES_PER_COMMIT`) up to which a run indexes its first commit's records beside
the next commits. A larger run would still build nearly all of its index after the last commit, and its first
segment would be small beside the rest: maintenance then rewrites the whole index (`INDEX_TIER_RATIO`)."""
RETAGGED_PER_WRITE = 10_000
"""Stored records re-tagged by summaries, written per Lance commit (see `MemoryProcessor._write_retagged`)."""
FILES_PER_COMMIT = 1000
"""Records of this many files are held before a commit (a run over 20,000 sessions held all of them)."""
LINE_SESSIONS_SCHEMA = pa.schema([pa.field("uuid", pa.string()), pa.field("session", pa.string())])
"""The session of each line with a uuid (`FileRead.line_sessions`), as a worker sends them."""


class Span(NamedTuple):
    """Rows ``start`` to ``stop`` of ``table``: one file's share of the Arrow table a worker process built for
    the batch of files it read (`MemoryProcessor.for_sending`). Pickled, the spans of one batch share the
    table, which travels once, as its Arrow buffers."""

    table: pa.Table
    start: int
    stop: int


class FileRead(NamedTuple):
    """What `MemoryProcessor.read_session` takes from one file (picklable: a worker process may read it).
    Records and edges come as columns, which cost a fraction of as many dicts to pass from the worker; a
    worker sends them as a `Span` of its batch's Arrow table."""

    records: dict[str, list] | Span
    """A list per name of `RECORD_COLUMNS`, a record per position (or a `Span` of `RECORD_COLUMNS_SCHEMA`)."""
    edges: tuple[list[str], list[str], list[str]] | Span
    """The ``reply_to`` edges' ids, sources and destinations (or a `Span` of `EDGE_COLUMNS_SCHEMA`)."""
    summaries: list[tuple[str | None, str, str | None]]
    """``(leaf uuid, text, the file's own session)`` of each summary line."""
    line_sessions: tuple[list[str], list[str]] | Span
    """The uuid of every line with one, and its session (or a `Span` of `LINE_SESSIONS_SCHEMA`)."""


class MemoryProcessor(SessionProcessor):
    """Batches records and edges per commit and summaries per run; ``commit`` writes each table once."""

    name = "memory"
    commit_every_files = FILES_PER_COMMIT
    parallel_reads = True

    def __init__(self, store: LanceStore):
        self.store = store
        self._records = _Rows(RECORD_COLUMNS_SCHEMA)
        self._edges = _Rows(EDGE_COLUMNS_SCHEMA)
        self._summaries: list[tuple[str | None, str, str | None]] = []
        self._pending_summaries: list[tuple[str | None, str, str | None]] = []
        self._tags: dict[str, set[str]] = {}
        self._line_sessions = _Rows(LINE_SESSIONS_SCHEMA)
        self._run_line_sessions: list[pa.Table] = []
        """Session of every line of the run's committed files (`LINE_SESSIONS_SCHEMA`, sessions dictionary-encoded),
        one table per commit: summary leaves may point at any line; Arrow holds a million of them in ~45 MB."""
        self._stats: dict = {}
        self._versions_before: dict[str, int] = {}
        self._indexing: tuple[InThread, int] | None = None
        """The index build started after the run's first commit, and the run's commits then; waited for at its end."""

    def begin_run(self) -> None:
        self.discard()
        self._wait_for_index()  # a run that ended early left one
        self._pending_summaries, self._tags, self._run_line_sessions = [], {}, []
        self._stats = {"records_written": 0, "edges_written": 0, "summaries_attached": 0, "commits": 0}
        self.store.prepare_for_write((RECORDS, EDGES, EVENTS))  # a first run creates them: one warehouse connection
        self._versions_before = {t: self.store.version(t) for t in (RECORDS, EDGES)}

    @staticmethod
    def read_session(session_path: Path, project: str, session_key: str, start_offset: int = 0,
                     ) -> tuple[FileRead, ProcessorResult]:
        """A file's records, edges, summaries and line sessions (`FileRead`), touching no store: a worker
        process may read it (see `parallel_reads`)."""
        stats = ParseStats()
        rows: list[tuple] = []  # in `RECORD_COLUMNS` order, made columns once at the end
        parents: dict[str, str | None] = {}
        record_ids: set[str] = set()
        links: list[tuple[str, str]] = []
        summaries: list[tuple[str | None, str]] = []
        file_session: str | None = None
        line_sessions: dict[str, str] = {}
        for item in source_type(session_key).memory(session_path, session_key, project, start_offset, stats):
            if item.summary is not None:
                summaries.append(item.summary)
                continue
            if item.id:
                parents[item.id] = item.parent
                if item.session_id:
                    line_sessions[item.id] = item.session_id
            file_session = file_session or item.session_id
            if item.record is None:
                continue
            record_id = item.id or stable_id(session_key, item.offset)
            rows.append(_record_values(record_id, session_key, project, item.record))
            record_ids.add(record_id)
            if item.parent:
                links.append((record_id, item.parent))
        dsts = [_nearest_record(parent, parents, record_ids) for _, parent in links]
        srcs = [src for src, _ in links]
        edges = ([edge_id(src, dst, "reply_to") for src, dst in zip(srcs, dsts, strict=True)], srcs, dsts)
        records = dict(zip(RECORD_COLUMNS, map(list, zip(*rows, strict=True)), strict=True)) if rows else {
            name: [] for name in RECORD_COLUMNS}
        read = FileRead(records, edges, [(leaf, text, file_session) for leaf, text in summaries],
                        (list(line_sessions), list(line_sessions.values())))
        return read, ProcessorResult(items_count=len(records["id"]), end_offset=stats.end_offset,
                                     bytes_read=stats.bytes_read, malformed=stats.malformed)

    @staticmethod
    def for_sending(reads: list[FileRead]) -> list[FileRead]:
        """In a worker process: the records, edges and line sessions of a batch of files as one Arrow table each,
        every file's a `Span` of them. The run takes them without a Python object per value (unpickling those,
        building the tables and the line sessions' dict from them cost its process ~0.5 s at 2,000 sessions) and
        writes them as they are; the tables are the ones `commit` builds from the same files read in the run's
        process."""
        parts = [(read.records, read.edges, read.line_sessions) for read in reads]
        tables = []
        for n, schema in enumerate((RECORD_COLUMNS_SCHEMA, EDGE_COLUMNS_SCHEMA, LINE_SESSIONS_SCHEMA)):
            rows = _Rows(schema)
            for part in parts:
                rows.add(part[n])
            tables.append(rows.table())
        sent, at = [], [0, 0, 0]
        for read, part in zip(reads, parts, strict=True):
            spans = []
            for n, table in enumerate(tables):
                count = len(part[n]["id"] if n == 0 else part[n][0])
                spans.append(Span(table, at[n], at[n] + count))
                at[n] += count
            sent.append(read._replace(records=spans[0], edges=spans[1], line_sessions=spans[2]))
        return sent

    def take(self, read: FileRead) -> None:
        """Add one file's `read_session` to the batch."""
        self._records.add(read.records)
        self._edges.add(read.edges)
        self._summaries.extend(read.summaries)
        self._line_sessions.add(read.line_sessions)

    def commit(self, conn: Connection) -> None:
        import pyarrow.compute as pc  # not at the top: `sessionlake ingest` imports this module before it forks

        lines = self._line_sessions.table()
        self._run_line_sessions.append(lines.set_column(1, "session", pc.dictionary_encode(lines.column("session"))))
        self._pending_summaries.extend(self._summaries)
        records = self._records.table()  # an id read twice is written once, its last record (`upsert_records`)
        grown = self._attach_summaries(records, final=False)
        tags = _tags_of(records.column("session_id"), {session: sorted(tags) for session, tags in self._tags.items()})
        batched = set(records.column("id").to_pylist()) if grown else set()
        self._write_retagged(grown, batched, record_table(records, tags, tier="episodic"),
                             edge_table(self._edges.table(), "reply_to"))
        self.discard()
        if self._indexing is None and self._stats["records_written"] and self._indexes_early():
            # the build is Lance's, outside Python's lock: beside the next commits, not after the last (a first
            # ingest of 2,000 sessions ended on its whole 0.8 s build, alone on one core)
            self._indexing = InThread(self.store.index_new_records, "sessionlake-memory-index"), self._stats["commits"]

    def discard(self) -> None:
        """Forget the batch (its files are read again); summary state of committed files stays."""
        self._records, self._edges = _Rows(RECORD_COLUMNS_SCHEMA), _Rows(EDGE_COLUMNS_SCHEMA)
        self._summaries, self._line_sessions = [], _Rows(LINE_SESSIONS_SCHEMA)

    def _write(self, rows: list[dict], records: pa.Table | None = None, edges: pa.Table | None = None) -> None:
        self._stats["records_written"] += self.store.upsert_records(rows, index=False, table=records)
        self._stats["edges_written"] += self.store.upsert_edges([], table=edges)
        self._stats["commits"] += 1

    def _write_retagged(self, sessions: list[str], batched: set[str], records: pa.Table | None = None,
                        edges: pa.Table | None = None) -> None:
        """Write ``records`` and ``edges`` (this commit's; ``batched``: the records' ids) with the stored
        records of ``sessions`` re-tagged, at most `RETAGGED_PER_WRITE` re-tagged records per Lance
        commit: one commit when they fit (the usual case), more in bounded memory when summaries re-tag
        many stored sessions at once (the end of a first run over a large tree held them all: +500 MB
        at 20,000 sessions)."""
        batch: list[dict] = []
        for row in self._retagged(sessions, batched):
            batch.append(row)
            if len(batch) >= RETAGGED_PER_WRITE:
                self._write(batch)
                batch = []
        self._write(batch, records, edges)

    def end_run(self) -> dict:
        if self._pending_summaries:  # leaves found nowhere in the run or the store: their own session
            self._write_retagged(self._attach_summaries(None, final=True), set())
        indexed = self._wait_for_index()
        if self._stats.get("records_written") and self._stats["commits"] > indexed:
            self.store.index_new_records()  # what the commits after the first added: one segment more at most
        stats = dict(self._stats)
        for table in (RECORDS, EDGES):
            version = self.store.version(table)
            stats[f"lance_version_{table}"] = version
            stats[f"lance_versions_added_{table}"] = version - self._versions_before.get(table, version)
        if stats.get("commits"):
            write_event(self.store, "memory_ingest", stats)
        return stats

    def _indexes_early(self) -> bool:
        """Whether this run's first commit is indexed beside the next ones (`EARLY_INDEX_MAX_COMMITS`)."""
        per_commit = self.commit_every_files or self.files_in_run
        return 0 < self.files_in_run <= EARLY_INDEX_MAX_COMMITS * per_commit

    def _wait_for_index(self) -> int:
        """Wait for the index build started after the first commit, if any, and raise what it raised; the
        commits whose records it took (0: none)."""
        indexing, self._indexing = self._indexing, None
        if indexing is None:
            return 0
        indexing[0].wait()
        return indexing[1]

    def _attach_summaries(self, records: pa.Table | None, final: bool) -> list[str]:
        """Resolve what pending summaries can be (``records``: this commit's, `RECORD_COLUMNS_SCHEMA`) and
        return the sessions whose tags grew (`_retagged` re-tags their stored records; the commit tags
        its records with every tag known). ``final``: summaries still unresolved go to their own file's
        session."""
        grown: dict[str, set[str]] = {}
        if self._pending_summaries:
            leaves = pa.array(sorted({leaf for leaf, _, _ in self._pending_summaries if leaf}), pa.string())
            session_of = dict(_found(self._run_line_sessions, "uuid", "session", leaves))
            session_of.update(_found([records] if records is not None else [], "id", "session_id", leaves))
            missing = [leaf for leaf, _, _ in self._pending_summaries if leaf and leaf not in session_of]
            stored = self.store.rows_by_id(self.store.dataset(RECORDS), missing, ["id", "session_id"])
            for rid, row in stored.items():
                session_of[rid] = row["session_id"]
            waiting = []
            for leaf, text, own_session in self._pending_summaries:
                found = session_of.get(leaf)
                if found is None and leaf and not final:  # its leaf may come in a later file of the run
                    waiting.append((leaf, text, own_session))
                    continue
                session = found or own_session
                if session:
                    self._stats["summaries_attached"] += 1
                    if text not in self._tags.get(session, set()):
                        self._tags.setdefault(session, set()).add(text)
                        grown.setdefault(session, set()).add(text)
            self._pending_summaries = waiting
        return sorted(grown)

    def _retagged(self, sessions: list[str], batched: set[str]) -> Iterator[dict]:
        """The stored records of ``sessions`` (but ``batched``, this commit's) whose tags grew, re-tagged;
        read `SUMMARY_SESSIONS_PER_QUERY` sessions at a time."""
        for start in range(0, len(sessions), SUMMARY_SESSIONS_PER_QUERY):
            chunk = sessions[start : start + SUMMARY_SESSIONS_PER_QUERY]
            where = "session_id IN (" + ",".join(sql_str(s) for s in chunk) + ")"
            for row in self.store.records_where(where):
                new_tags = set(row["tags"] or []) | self._tags[row["session_id"]]
                if row["id"] not in batched and new_tags != set(row["tags"] or []):
                    yield {**row, "tags": sorted(new_tags)}


class _Rows:
    """Rows of ``schema`` in the order they are added: columns of Python values (a file read in this
    process, made Arrow once per commit) or `Span`s of a worker's table (taken as they are; consecutive
    spans of one table are taken as one slice)."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self._pieces: list[pa.Table] = []
        self._span: list | None = None
        """The spans added last, of one table and consecutive: ``[table, start, stop]``."""
        self._values: list[list] = [[] for _ in schema]

    def add(self, rows: dict[str, list] | Sequence[list] | Span) -> None:
        """Add ``rows``: a `Span`, or a list per column (by name, or in the schema's order)."""
        if isinstance(rows, Span):
            self._add_values()
            span = self._span
            if span is not None and span[0] is rows.table and span[2] == rows.start:
                span[2] = rows.stop
            else:
                self._add_span()
                self._span = list(rows)
            return
        self._add_span()
        if isinstance(rows, dict):
            rows = [rows[name] for name in self.schema.names]
        for mine, theirs in zip(self._values, rows, strict=True):
            mine.extend(theirs)

    def table(self) -> pa.Table:
        """Every row added, as one table of the schema."""
        self._add_span()
        self._add_values()
        if len(self._pieces) != 1:
            self._pieces = [pa.concat_tables(self._pieces) if self._pieces else self.schema.empty_table()]
        return self._pieces[0]

    def _add_span(self) -> None:
        if self._span is not None:
            table, start, stop = self._span
            self._pieces.append(table.slice(start, stop - start))
            self._span = None

    def _add_values(self) -> None:
        if self._values[0]:
            self._pieces.append(pa.Table.from_arrays(
                [pa.array(values, field.type) for values, field in zip(self._values, self.schema, strict=True)],
                schema=self.schema))
            self._values = [[] for _ in self.schema]


def _found(tables: Iterable[pa.Table], key: str, value: str, wanted: pa.Array) -> Iterator[tuple]:
    """``(key, value)`` of each row of ``tables`` whose ``key`` is one of ``wanted``, in order."""
    import pyarrow.compute as pc

    for table in tables:
        hits = table.filter(pc.is_in(table.column(key), value_set=wanted))
        yield from zip(hits.column(key).to_pylist(), hits.column(value).to_pylist(), strict=True)


def _tags_of(sessions: pa.ChunkedArray, tagged: dict[str, list[str]]) -> pa.Array:
    """Each record's tags, by its session (``tagged``: the sorted tags of each session that has any; [] for
    the others and for a record without a session), as ``records.tags`` values."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(sessions.combine_chunks())
    per_session = [tagged.get(session, []) for session in encoded.dictionary.to_pylist()] + [[]]
    no_session = len(per_session) - 1
    return pa.array(per_session, RECORDS_SCHEMA.field("tags").type).take(encoded.indices.fill_null(no_session))


def _record_values(record_id: str, session_key: str, project: str, record: dict) -> tuple:
    """A source's record (``{role, text, session_id, timestamp, model, git_branch}``) in `RECORD_COLUMNS` order."""
    return (record_id, record["text"], record["role"], record.get("session_id"), session_key, project,
            as_utc(record.get("timestamp")), record.get("model"), record.get("git_branch"))


def _nearest_record(parent: str, parents: dict[str, str | None], record_ids: set[str]) -> str:
    """Walk up ``parentUuid`` from ``parent`` to the first record; stop where the chain leaves the lines read."""
    seen: set[str] = set()
    node = parent
    while node not in record_ids and node in parents and node not in seen:
        seen.add(node)
        up = parents[node]
        if up is None:
            return node
        node = up
    return node
