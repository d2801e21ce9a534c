"""LanceStore: the one door to the Lance memory tables (records, edges, events, provenance).

Contract:
- Four tables with explicit schemas, created on first use. ``open_table(name)`` always returns a
  fresh handle, so a caller sees the latest version.
- A table is created only when its folder does not exist and it never existed: a store opened from
  settings records in the warehouse every table it creates, writes (`for_write`) or opens through LanceDB
  (`open_table`); `dataset` alone, recall's read path, reads no warehouse (`resources.memory.table_ledger`),
  and a recorded table whose folder (or bucket prefix) is gone raises `LanceTableLost` instead of
  coming back empty.
  A folder Lance cannot open (``_versions/`` missing or unreadable) raises `LanceTableUnreadable` and
  is never written over: the memory it held is not silently replaced by an empty table.
  ``set_aside(name)`` moves such a folder out of the way (kept under ``broken/``) so
  ``sessionlake memory rebuild`` can re-derive it.
- ``upsert_records`` / ``upsert_edges`` write a whole batch in ONE commit (``merge_insert`` on ``id``),
  and nothing at all for an empty batch: a retried run changes nothing and versions stay few.
  Writes, index builds and the reads of the write path go through pylance (`for_write`, `dataset`),
  so an ingest never imports lancedb (about 1 s, most of it its namespace REST client); only
  ``records`` with an embedder is written through LanceDB, which fills the vectors.
  Re-upserting a record keeps its provenance and ``created_at``.
- Indexes: a write never rebuilds one; new rows are indexed as a segment once ``INDEX_DELTA_ROWS`` are
  outside it, and maintenance keeps each index at two segments (`resources.memory.indexes`).
- Provenance is append-only, one row per entry in the ``provenance`` table; ``get(id)["provenance"]``
  is that record's entries in order. The provenance methods call `resources.memory.provenance`, whose
  docstring holds their contract and the migration of a store written before that table existed.
- The database is a folder, or a `StorageLocation` (``s3://bucket/prefix/lance``, from
  ``SESSIONLAKE_STORAGE_URI``) that Lance opens natively. Lance commits there with a conditional put
  (``If-None-Match: *`` on the next manifest), so concurrent writers never lose a commit: the loser
  of a race rebases or retries, as it does on local disk. The store must support conditional puts
  (AWS S3, MinIO, R2 and moto do). The provenance-column migration is local only.
- Embeddings are optional: with ``embedder`` set (a LanceDB embedding-registry name), ``records``
  gets a ``vector`` column that LanceDB fills from ``text`` on every write.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa

from resources.memory.schema import (
    BROKEN_DIR,
    EDGES,
    EDGES_SCHEMA,
    ID_INDEX,
    ID_LOOKUP_CHUNK,
    INDEX_DELTA_ROWS,
    OPEN_RETRY_SEC,
    RECORDS,
    RECORDS_SCHEMA,
    SCHEMAS,
    TABLE_NAMES,
    VECTOR_COLUMN,
    LanceTableUnreadable,
    edge_id,
    new_record,
    sql_str,
)
from resources.objectstore.location import StorageLocation
from resources.times import as_utc, utcnow


def _id_filter(ids: Sequence[str]) -> str:
    return "id IN (" + ",".join(sql_str(i) for i in ids) + ")"


_RECORD_FIELDS = frozenset(RECORDS_SCHEMA.names)
SCAN_SHARE = 10
"""`LanceStore._created_at` reads the whole id column once the ids to find are over a tenth of the rows
(or the table has no id index)."""


def _joined(table: pa.Table | None, rows: list[dict], schema: pa.Schema) -> pa.Table | None:
    """``table`` then ``rows`` as one table of ``schema``, one row per id: each id where it first comes, with
    its last row (merge_insert rejects a source with duplicate keys); None when there is no row."""
    parts = [t for t in (table, pa.Table.from_pylist(rows, schema=schema) if rows else None)
             if t is not None and t.num_rows]
    if not parts:
        return None
    data = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    import pyarrow.compute as pc

    if pc.count_distinct(data["id"]).as_py() == data.num_rows:  # the usual case, without a Python string per id
        return data
    last = {i: n for n, i in enumerate(data["id"].to_pylist())}
    return data.take(list(last.values()))


def _check_name(name: str) -> None:
    if name not in SCHEMAS:
        raise ValueError(f"unknown table {name!r}; expected one of {', '.join(TABLE_NAMES)}")


class LanceStore:
    """The Lance database under ``path`` (a folder or a `StorageLocation`); see the module docstring."""

    def __init__(
        self,
        path: Path | str | StorageLocation,
        *,
        embedder: str | None = None,
        embedder_model: str | None = None,
        provenance_overflow_dir: Path | str | None = None,
        ledger=None,
    ) -> None:
        """``ledger`` (a `resources.memory.table_ledger.LanceTableLedger`) records the tables that exist;
        without one (a store opened on a bare folder) a missing table is simply created."""
        if isinstance(path, StorageLocation):
            self.location: StorageLocation | None = path
            self.root: Path | None = None
            self.uri = path.uri
            self._blobs = path.blobs()
        else:
            self.location = None
            self.root = Path(path)
            self.root.mkdir(parents=True, exist_ok=True)
            self.uri = str(self.root)
        self.provenance_overflow_dir = Path(provenance_overflow_dir) if provenance_overflow_dir else None
        self.ledger = ledger
        self.embedding = _load_embedder(embedder, embedder_model) if embedder else None
        from resources.memory.provenance import ProvenanceLog

        self._provenance = ProvenanceLog(self)
        if self.root is not None and (self.root / f"{RECORDS}.lance").exists():
            from resources.memory.provenance_migration import migrate_provenance_column

            # An unreadable records table is not migrated: whatever opens it next reports it
            # (maintain, recall, ingest), and `sessionlake memory rebuild` repairs it.
            with contextlib.suppress(LanceTableUnreadable):
                migrate_provenance_column(self)

    @functools.cached_property
    def db(self):
        """The LanceDB connection, made on first use: importing lancedb costs about 1 s (most of it its
        namespace REST client), which reads through `dataset` (recall, provenance appends) never pay."""
        import lancedb

        if self.location is not None:
            return lancedb.connect(self.uri, storage_options=self.location.lance_options())
        return lancedb.connect(self.uri)

    @classmethod
    def from_settings(cls, settings) -> LanceStore:
        """The store under ``SESSIONLAKE_STORAGE_URI``'s ``lance/`` when set, else the home's ``lance/``."""
        from resources.memory.table_ledger import ledger_for, ledger_location

        return cls(ledger_location(settings)[1], embedder=settings.embedder, embedder_model=settings.embedder_model,
                   provenance_overflow_dir=settings.provenance_overflow_dir, ledger=ledger_for(settings))

    # -- tables ---------------------------------------------------------------------------------------

    def table_path(self, name: str) -> Path:
        if self.root is None:
            raise NotImplementedError(f"{self.uri}: table folders exist only on local disk")
        return self.root / f"{name}.lance"

    def table_uri(self, name: str) -> str:
        return f"{self.uri}/{name}.lance"

    def table_exists(self, name: str) -> bool:
        """Whether table ``name`` has a folder (or, in a bucket, any object under its prefix)."""
        if self.root is not None:
            return os.path.lexists(self.table_path(name))
        return next(iter(self.blobs().list(f"{name}.lance/")), None) is not None

    def blobs(self):
        """The object-store client under the bucket prefix of the tables (remote stores only)."""
        if self.location is None:
            raise NotImplementedError(f"{self.uri} is a local folder")
        return self._blobs

    def open_table(self, name: str):
        """A fresh handle on table ``name``, created with its schema only if its folder does not exist.

        Raises `LanceTableUnreadable` when the folder exists and Lance cannot open it, `LanceTableLost`
        when the ledger recorded the table and its folder is gone.
        """
        _check_name(name)
        if not self.table_exists(name):
            self._refuse_lost(name)
            table = self._create_table(name)
        else:
            table = self._open_existing(name)
        self._remember(name)
        return table

    def _refuse_lost(self, name: str) -> None:
        """`LanceTableLost` when the ledger recorded table ``name`` and its folder is missing.

        The folder is looked for again after the ledger is read: another process may have created the
        table (and recorded it) since the caller found no folder."""
        if self.ledger is not None and name in self.ledger.known() and not self.table_exists(name):
            raise self.ledger.lost(name, self.table_uri(name))

    def _remember(self, name: str) -> None:
        if self.ledger is not None:
            self.ledger.record(name)

    def _open_existing(self, name: str):
        try:
            return self.db.open_table(name)
        except Exception:
            time.sleep(OPEN_RETRY_SEC)
        try:
            return self.db.open_table(name)
        except Exception as exc:
            raise LanceTableUnreadable(name, self.table_uri(name), exc) from exc

    def dataset(self, name: str):
        """A pylance dataset of table ``name`` at its latest version, for the paths that need no LanceDB
        (recall's full-text query, provenance appends): the ``lance`` module loads in a fraction of
        lancedb's import time. The table is created first, empty with its schema (the same files LanceDB
        writes), when its folder does not exist, and recorded in the ledger then; a folder that cannot be
        opened raises `LanceTableUnreadable`, as in `open_table`."""
        import lance

        _check_name(name)
        options = self.location.lance_options() if self.location is not None else None
        create = self._create_missing(name)
        try:
            dataset = lance.dataset(self.table_uri(name), storage_options=options)
        except Exception:
            time.sleep(OPEN_RETRY_SEC)
            try:
                dataset = lance.dataset(self.table_uri(name), storage_options=options)
            except Exception as exc:
                raise LanceTableUnreadable(name, self.table_uri(name), exc) from exc
        if create:  # an existing table is recorded by `for_write` and `open_table`: a read opens no warehouse
            self._remember(name)
        return dataset

    def _create_missing(self, name: str) -> bool:
        """Create table ``name``, empty with its schema, when its folder does not exist (`_refuse_lost` first);
        True when it did. The caller records it in the ledger."""
        if self.table_exists(name):
            return False
        self._refuse_lost(name)
        if name == RECORDS and self.embedding is not None:
            self._create_table(name)  # LanceDB keeps the embedding function in the schema's metadata
        else:
            import lance

            options = self.location.lance_options() if self.location is not None else None
            with contextlib.suppress(OSError):  # another process created it a moment ago
                lance.write_dataset(SCHEMAS[name].empty_table(), self.table_uri(name), mode="create",
                                    storage_options=options)
        return True

    def prepare_for_write(self, names: Iterable[str]) -> None:
        """Create the tables of ``names`` that do not exist and record every one of them in the ledger, as
        `for_write` does, with one warehouse connection for all (an ingest writes three tables; a connection
        each cost a first ingest's memory ~0.1 s apiece, mostly DuckDB's fsyncs)."""
        names = list(names)
        for name in names:
            _check_name(name)
            self._create_missing(name)
        if self.ledger is not None:
            self.ledger.record(*names)

    def for_write(self, name: str):
        """The table ``name`` to write to, recorded in the ledger as `open_table` records it: a pylance
        dataset, or for ``records`` with an embedder a LanceDB table (LanceDB computes the vectors)."""
        if name == RECORDS and self.embedding is not None:
            return self.open_table(name)
        dataset = self.dataset(name)
        self._remember(name)
        return dataset

    def forget(self, name: str) -> None:
        """Let the next ``open_table`` create table ``name`` afresh (``memory rebuild`` re-derives it)."""
        if self.ledger is not None:
            self.ledger.forget(name)

    def unreadable_tables(self, names: Iterable[str] = TABLE_NAMES) -> dict[str, LanceTableUnreadable]:
        """The tables among ``names`` whose folder exists but cannot be opened, with the error."""
        found = {}
        for name in names:
            try:
                self.open_table(name)
            except LanceTableUnreadable as exc:
                found[name] = exc
        return found

    def set_aside(self, name: str) -> Path | str:
        """Move the folder of table ``name`` to ``broken/<name>.lance-<UTC time>`` and return where it went.

        The next ``open_table`` creates the table afresh; the old files stay for a person to inspect.
        In a bucket, where nothing renames a prefix, every object is copied first and only then are the
        originals deleted: a move cut short leaves the table where it was (copying) or a whole copy
        under ``broken/`` (deleting), and is simply run again.
        """
        self.forget(name)
        aside = f"{BROKEN_DIR}/{name}.lance-{utcnow().strftime('%Y%m%dT%H%M%S%fZ')}"
        if self.root is None:
            blobs, prefix = self.blobs(), f"{name}.lance/"
            names = [b.name for b in blobs.list(prefix)]
            for blob in names:
                blobs.copy(blob, f"{aside}/{blob[len(prefix):]}")
            for blob in names:
                blobs.delete(blob)
            return f"{self.uri}/{aside}"
        target = self.root / aside
        target.parent.mkdir(exist_ok=True)
        os.rename(self.table_path(name), target)
        return target

    def _create_table(self, name: str):
        schema = SCHEMAS[name]
        functions = None
        if name == RECORDS and self.embedding is not None:
            from lancedb.embeddings import EmbeddingFunctionConfig

            schema = schema.append(pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), self.embedding.ndims())))
            functions = [EmbeddingFunctionConfig(source_column="text", vector_column=VECTOR_COLUMN,
                                                 function=self.embedding)]
        return self.db.create_table(name, schema=schema, exist_ok=True, embedding_functions=functions)

    def count(self, name: str) -> int:
        return self.dataset(name).count_rows()

    def version(self, name: str) -> int:
        """The table's current Lance version number (each commit adds one)."""
        return self.dataset(name).version

    def projects(self) -> list[str]:
        """Every project some record names, sorted (reads that one column)."""
        import pyarrow.compute as pc

        column = self.dataset(RECORDS).to_table(columns=["project"]).column("project")
        return sorted(p for p in pc.unique(column).to_pylist() if p)

    # -- writes ---------------------------------------------------------------------------------------

    def upsert_records(self, rows: list[dict], *, index: bool = True, table: pa.Table | None = None) -> int:
        """Insert or update ``rows`` by id in one commit, keep existing created_at; apply the FTS policy.
        ``table``: more records, whole rows of ``RECORDS_SCHEMA`` (`record_table`'s), written before
        ``rows`` in the same commit (an ingest hands its records over as columns).

        Provenance lives in its own table, so an updated record keeps every entry appended to it, even
        concurrently. The first upsert creates the indexes; later ones index new rows as a segment
        once ``INDEX_DELTA_ROWS`` are unindexed (see the module docstring). Not ``index``: the caller
        writes more batches and calls `index_new_records` itself (an ingest run: after its first commit,
        beside the next ones, and once after the last), so a large run does not index once per batch.
        """
        prepared = []
        for row in rows:
            if row.keys() >= _RECORD_FIELDS:  # a whole row (`new_record`'s): nothing to fill in
                full = dict(row)
            else:
                full = {**new_record(row["id"], row.get("text") or "", tier=row.get("tier") or "episodic"), **row}
            full["timestamp"] = as_utc(full.get("timestamp"))
            prepared.append(full)
        data = _joined(table, prepared, RECORDS_SCHEMA)
        if data is None:
            return 0
        created = self._created_at(data["id"])
        if created:
            column = data.schema.get_field_index("created_at")
            kept = [created.get(i, now) for i, now in zip(data["id"].to_pylist(), data["created_at"].to_pylist(),
                                                           strict=True)]
            data = data.set_column(column, "created_at", pa.array(kept, data.schema.field(column).type))
        target = self.for_write(RECORDS)
        target.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        if index:
            self.index_new_records()
        return data.num_rows

    def _created_at(self, ids: pa.ChunkedArray) -> dict:
        """``{id: created_at}`` of the stored records among ``ids``: looked up by id for a batch of one lookup,
        or one that is small beside a table with its id index; otherwise read in one scan of two columns
        (the commits of a first ingest, whose table has no index before the run ends: each lookup of
        `ID_LOOKUP_CHUNK` ids would scan it)."""
        dataset = self.dataset(RECORDS)
        stored_rows = dataset.count_rows()
        if not stored_rows:
            return {}
        indexed = any(index.name == ID_INDEX for index in dataset.describe_indices())
        if len(ids) <= ID_LOOKUP_CHUNK or (indexed and len(ids) * SCAN_SHARE < stored_rows):
            rows = self.rows_by_id(dataset, ids.to_pylist(), ["id", "created_at"])
            return {i: row["created_at"] for i, row in rows.items()}
        import pyarrow.compute as pc

        stored = dataset.to_table(columns=["id", "created_at"])
        stored = stored.filter(pc.is_in(stored["id"], value_set=ids.combine_chunks()))
        return dict(zip(stored["id"].to_pylist(), stored["created_at"].to_pylist(), strict=True))

    def index_new_records(self) -> None:
        """The write path's index policy on ``records``: create the indexes on the first rows, then index
        new rows as a segment once ``INDEX_DELTA_ROWS`` are outside them."""
        try:
            self.refresh_indexes(RECORDS, min_unindexed=INDEX_DELTA_ROWS)
        except Exception as exc:
            from resources.memory.conflicts import is_commit_conflict

            if not is_commit_conflict(exc):
                raise
            # The rows are committed; another writer changed the indexes at the same moment (two first
            # upserts both create them). Unindexed rows are still found, and the next write or
            # maintenance indexes them.

    def upsert_edges(self, rows: list[dict], *, table: pa.Table | None = None) -> int:
        """Insert or update edges by their stable id (hash of src, dst, edge_type; `new_edge` made it, or it is
        made here) in one commit; ``table``: more edges, whole rows of ``EDGES_SCHEMA`` (`edge_table`'s),
        written before ``rows``."""
        rows = [{**r, "id": r.get("id") or edge_id(r["src"], r["dst"], r["edge_type"]),
                 "weight": float(r.get("weight", 1.0)), "updated_at": r.get("updated_at") or utcnow()} for r in rows]
        data = _joined(table, rows, EDGES_SCHEMA)
        if data is None:
            return 0
        target = self.for_write(EDGES)
        target.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        return data.num_rows

    def refresh_indexes(self, name: str = RECORDS, *, min_unindexed: int = 1, tiered: bool = False) -> bool:
        """Apply the index policy to table ``name``; True when it committed anything (see
        `resources.memory.indexes.refresh_indexes`)."""
        from resources.memory.indexes import refresh_indexes

        return refresh_indexes(self, name, min_unindexed=min_unindexed, tiered=tiered)

    # -- reads ----------------------------------------------------------------------------------------

    def rows_by_id(self, table, ids: Sequence[str], columns: list[str]) -> dict[str, dict]:
        """``{id: row}``, each row with ``columns`` only, for the ids among ``ids`` that ``table`` holds
        (a handle from `open_table` or a dataset from `dataset`)."""
        found: dict[str, dict] = {}
        if not ids or table.count_rows() == 0:
            return found
        for start in range(0, len(ids), ID_LOOKUP_CHUNK):
            chunk = ids[start : start + ID_LOOKUP_CHUNK]
            if hasattr(table, "search"):  # a LanceDB table
                rows = table.search().where(_id_filter(chunk)).select(columns).limit(len(chunk)).to_arrow()
            else:
                rows = table.to_table(columns=columns, filter=_id_filter(chunk), limit=len(chunk))
            for row in rows.to_pylist():
                found[row["id"]] = row
        return found

    def get_many(self, ids: Sequence[str]) -> dict[str, dict]:
        """Full records by id, each with ``provenance`` (its entries, in order); missing ids are absent."""
        table = self.open_table(RECORDS)
        columns = [n for n in table.schema.names if n != VECTOR_COLUMN]
        rows = self.rows_by_id(table, list(dict.fromkeys(ids)), columns)
        entries = self.provenance_of(list(rows))
        for rid, row in rows.items():
            row["provenance"] = entries.get(rid, [])
        return rows

    def get(self, record_id: str) -> dict | None:
        """The record with id ``record_id`` (with its provenance entries, in order), or None."""
        return self.get_many([record_id]).get(record_id)

    def records_where(self, where: str, columns: list[str] | None = None) -> list[dict]:
        """Every record matching a Lance SQL filter (records columns only, no provenance)."""
        return self.dataset(RECORDS).to_table(columns=columns or None, filter=where).to_pylist()

    # -- provenance (resources.memory.provenance) ------------------------------------------------------

    def provenance_of(self, record_ids: Sequence[str]) -> dict[str, list[dict]]:
        """``{record_id: [entry, ...]}`` in append order, for the ids that have any entries."""
        return self._provenance.entries_of(record_ids)

    def append_provenance_batch(self, pairs: Sequence[tuple[str, dict]], entry_ids: Sequence[str] | None = None,
                                *, retried: bool = False) -> int:
        """Append the ``(record_id, entry)`` pairs in ONE commit; see `ProvenanceLog.append`."""
        return self._provenance.append(pairs, entry_ids, retried=retried)

    def record_provenance(self, pairs: Sequence[tuple[str, dict]]) -> None:
        """Queue the pairs when the write-behind queue is on, else append them now on this thread."""
        self._provenance.record(pairs)

    def enable_provenance_queue(self, **options):
        """Start (once) the write-behind queue that `record_provenance` goes through; returns it."""
        return self._provenance.enable_queue(**options)

    def disable_provenance_queue(self, timeout: float | None = None) -> None:
        """Stop the queue after draining it; provenance is written synchronously again."""
        self._provenance.disable_queue(timeout)

    @property
    def provenance_queue(self):
        return self._provenance.queue


def _load_embedder(name: str, model: str | None):
    """Build an embedding function from the LanceDB registry; a clear error if it is unknown or missing."""
    from lancedb.embeddings import get_registry

    try:
        factory = get_registry().get(name)
    except KeyError as exc:
        raise ValueError(f"SESSIONLAKE_EMBEDDER={name!r} is not a LanceDB embedding-registry name") from exc
    return factory.create(name=model) if model else factory.create()
