"""The DuckDB warehouse: short-lived connections, migrating to the schema, processor state.

DuckDB lets one process hold a database file at a time (even read-only), so every caller opens a
connection for one short unit of work through `StateStore.connect()`, which retries with backoff
while another process holds the file. Nothing keeps a connection open across a run.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from resources.config.settings import Settings
from resources.ingest.session_files import MalformedLine, SessionFile
from resources.state.migrations import MIGRATIONS, Migration

if TYPE_CHECKING:
    import pyarrow as pa  # imported where a batch is built: a report that writes nothing never loads it

Connection = duckdb.DuckDBPyConnection
"""What `StateStore.connect()` yields; pipelines code names it through this alias, never through duckdb."""

LOCK_WAIT_SEC = 120.0
"""How long `connect()` keeps retrying while another process holds the database file, unless told
(`from_settings` takes ``Settings.warehouse_lock_wait_sec``, SESSIONLAKE_WAREHOUSE_LOCK_WAIT_SEC)."""



def is_lock_conflict(exc: BaseException) -> bool:
    """True for the errors DuckDB raises while another process or writer holds the file, or while another
    thread of this process closes its last connection to it (the file is still attached as it checkpoints;
    the ingest's processors beside each other open and close connections at once)."""
    text = str(exc)
    return isinstance(exc, duckdb.Error) and (
        "Could not set lock" in text or "Conflicting lock" in text or "database is locked" in text
        or "Unique file handle conflict" in text
    )


@contextlib.contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """``BEGIN`` on ``conn``; ``COMMIT`` when the block ends, ``ROLLBACK`` (and re-raise) when it raises,
    a KeyboardInterrupt too."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def insert_rows(conn: duckdb.DuckDBPyConnection, table: str, rows: pa.Table,
                conflict: str = "ON CONFLICT DO NOTHING") -> None:
    """Insert ``rows`` into the columns of ``table`` that their names say, in one statement through
    Arrow (DuckDB's executemany runs row by row); nothing for an empty batch."""
    if rows.num_rows == 0:
        return
    with registered(conn, "_insert_rows", rows):
        conn.execute(f"INSERT INTO {table} ({', '.join(rows.column_names)}) SELECT * FROM _insert_rows {conflict}")


SMALL_BATCH_ROWS = 1000
"""`staged_rows` sends batches up to this size to DuckDB as one JSON parameter (about 3 ms for 100 rows), larger
ones as a JSON-lines file that DuckDB's JSON reader reads (a parameter of megabytes parses several times slower:
0.4 s for 24,000 usage rows, against 0.06 s from a file). Neither loads pyarrow: registering any Arrow table makes
DuckDB import pyarrow's dataset module and numpy, about 0.2-0.3 s of CPU in every process that writes."""

TIMESTAMPTZ_MS = "TIMESTAMPTZ_MS"
"""A column type of `staged_rows`: TIMESTAMPTZ truncated to milliseconds (Arrow ``timestamp[ms, UTC]``)."""


class JsonRows(list):
    """Rows already encoded for `staged_rows`: one JSON object (bytes) each, with the columns' values (a
    timestamp as ISO-8601 text, truncated as its column type says). A worker process that read the rows
    encodes them, so the process that writes them neither decodes nor re-encodes a row."""


def arrow_schema(columns: Sequence[tuple[str, str]]) -> pa.Schema:
    """The Arrow schema of ``columns``: (name, type) pairs, the type VARCHAR, BIGINT, DOUBLE, BOOLEAN,
    TIMESTAMPTZ (microseconds, UTC) or `TIMESTAMPTZ_MS`."""
    import pyarrow as pa

    types = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(),
             "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"), TIMESTAMPTZ_MS: pa.timestamp("ms", tz="UTC")}
    return pa.schema([(name, types[kind]) for name, kind in columns])


@contextlib.contextmanager
def registered(conn: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    """``table`` readable in SQL as ``name`` while the block runs."""
    conn.register(name, table)
    try:
        yield
    finally:
        conn.unregister(name)


@contextlib.contextmanager
def staged_rows(conn: duckdb.DuckDBPyConnection, name: str, rows: Sequence[dict] | JsonRows,
                columns: Sequence[tuple[str, str]]) -> Iterator[None]:
    """Make ``rows`` (dicts: a missing key is NULL, a naive datetime is UTC; or `JsonRows`) readable in SQL
    as the temporary table ``name`` with ``columns`` (see `arrow_schema`) while the block runs, through
    DuckDB's JSON reader (see `SMALL_BATCH_ROWS`), without loading pyarrow.
    """
    import orjson  # here: a report that writes nothing never loads it (and its uuid and platform imports)

    structure = {column: "TIMESTAMPTZ" if kind == TIMESTAMPTZ_MS else kind for column, kind in columns}
    if not isinstance(rows, JsonRows):
        truncated = [column for column, kind in columns if kind == TIMESTAMPTZ_MS]
        if truncated:  # as Arrow's timestamp[ms] does
            rows = [{**r, **{c: r[c].replace(microsecond=r[c].microsecond // 1000 * 1000)
                             for c in truncated if r.get(c) is not None}} for r in rows]
        rows = [orjson.dumps(r, option=orjson.OPT_NAIVE_UTC) for r in rows]
    if len(rows) <= SMALL_BATCH_ROWS:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT unnest(from_json(?::JSON, ?), recursive := true)",
                     [(b"[%b]" % b",".join(rows)).decode(), orjson.dumps([structure]).decode()])
    else:
        import os
        import tempfile

        fd, path = tempfile.mkstemp(prefix="sessionlake-rows-", suffix=".jsonl")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\n".join(rows))
            conn.execute(f"""CREATE OR REPLACE TEMP TABLE {name} AS
                             SELECT * FROM read_json(?, format = 'newline_delimited', columns = ?)""",
                         [path, structure])
        finally:
            os.unlink(path)
    try:
        yield
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def fetch_one(conn: duckdb.DuckDBPyConnection, sql: str, params=None) -> tuple | None:
    """The first row of ``sql`` (or None), with the result fully consumed.

    DuckDB 2 refuses further work on a connection (``register``, ...) while a result is only partly
    fetched, which ``fetchone()`` leaves behind; use this instead.
    """
    rows = conn.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def migrate(conn: duckdb.DuckDBPyConnection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the schema to the last of ``migrations`` (the warehouse's by default); safe on every start
    and on a database at any older version.

    Returns the version the database was at before. A new database gets its whole schema in one
    transaction, sent as one script (one write to disk instead of one per version, and one call instead
    of one per statement: 12 ms of CPU instead of 30 for the warehouse's, which a first report waits for).
    """
    try:  # one read on a database that is up to date (every report opens one)
        current = fetch_one(conn, "SELECT coalesce(max(version), 0) FROM schema_version")[0]
    except duckdb.CatalogException:  # a new database
        script = ["CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)"]
        for version, statements in migrations:
            script += [*statements, f"INSERT INTO schema_version VALUES ({int(version)}, now())"]
        with transaction(conn):
            conn.execute(";\n".join(script))
        return 0
    for version, statements in migrations:
        if version > current:
            with transaction(conn):
                _apply(conn, version, statements)
    return current


def _apply(conn: duckdb.DuckDBPyConnection, version: int, statements: Sequence[str]) -> None:
    for statement in statements:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (?, ?)", [version, datetime.now(UTC)])


class StateStore:
    """A DuckDB file (the warehouse, unless other ``migrations`` are given). Open one short-lived
    connection per unit of work with `connect()`."""

    def __init__(self, path: Path | str, lock_wait_sec: float = LOCK_WAIT_SEC,
                 migrations: Sequence[Migration] = MIGRATIONS):
        self.path = Path(path)
        self.lock_wait_sec = lock_wait_sec
        self.migrations = migrations
        self._migrated = False

    @classmethod
    def from_settings(cls, settings: Settings) -> StateStore:
        return cls(settings.state_path, lock_wait_sec=settings.warehouse_lock_wait_sec)

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Yield a connection, retrying with jittered backoff while another process holds the file.

        The schema is migrated on the first writable connection of this store. A read-only
        connection to a file that does not exist yet is served from an empty migrated database.
        """
        if read_only and not self.path.exists():
            read_only = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._open(read_only)
        try:
            if not self._migrated and not read_only:
                migrate(conn, self.migrations)
                self._migrated = True
            yield conn
        finally:
            conn.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_wait_sec
        delay = 0.02
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as exc:
                if self._drop_empty_file(exc):
                    continue
                if not is_lock_conflict(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

    def _drop_empty_file(self, exc: duckdb.Error) -> bool:
        """Remove a zero-byte warehouse file DuckDB refused as invalid (what a full disk leaves when DuckDB
        created the file and could not write its header): it holds nothing, and no process uses it (DuckDB
        checks the file's lock before its header). True when removed, so the open is tried again."""
        if "not a valid DuckDB database file" not in str(exc):
            return False
        try:
            if self.path.stat().st_size:
                return False
            self.path.unlink()
        except FileNotFoundError:
            pass
        return True

    def schema_version(self) -> int:
        with self.connect() as conn:
            return fetch_one(conn, "SELECT max(version) FROM schema_version")[0]


@dataclass(frozen=True)
class ProcessorFileState:
    """What one processor last did with one session file."""

    processed_at: datetime
    file_hash: str
    file_size: int
    byte_offset: int
    tail_hash: str | None
    items_extracted: int

    def is_processed(self, file_hash: str) -> bool:
        """A file counts as processed only while its content hash equals the one stored when it was."""
        return self.file_hash == file_hash


def load_processor_state(
    conn: duckdb.DuckDBPyConnection, processor: str, session_files: Iterable[str] | None = None
) -> dict[str, ProcessorFileState]:
    """State rows of `processor`, keyed by session file (all of them, or only those listed).

    With ``session_files``, only their rows are read (a lookup on the primary key), so topping up one
    file costs the same with 100 or 100,000 files known."""
    sql = """SELECT session_file, processed_at, file_hash, file_size, byte_offset, tail_hash, items_extracted
             FROM session_processor_state WHERE processor_name = ?"""
    params: list = [processor]
    if session_files is not None:
        wanted = sorted(set(session_files))
        if not wanted:
            return {}
        sql += " AND session_file IN (SELECT unnest(?::JSON::VARCHAR[]))"
        params.append(json_list(wanted))
    return {r[0]: ProcessorFileState(r[1], r[2], r[3] or 0, r[4] or 0, r[5], r[6])
            for r in conn.execute(sql, params).fetchall()}


def unstable_files(conn: duckdb.DuckDBPyConnection, processor: str,
                   files: Sequence[SessionFile]) -> list[SessionFile]:
    """The ``files`` `processor` has not processed at their current size and mtime (the stat-only test of
    ``resources.ingest.plan.is_stable``). The stored size and time of every file are fetched as plain
    tuples, one query, and compared in Python: about 3x cheaper than sending the listing to DuckDB as
    JSON to join there (20 against 60 ms CPU at 20,000 files), and no row objects are built."""
    if not files:
        return []
    stored = {key: (size, processed_us) for key, size, processed_us in conn.execute(
        "SELECT session_file, file_size, epoch_us(processed_at) FROM session_processor_state WHERE processor_name = ?",
        [processor]).fetchall()}
    unstable = []
    for f in files:
        prev = stored.get(f.key)
        if prev is None or prev[0] != f.size or f.mtime_ns > prev[1] * 1000:
            unstable.append(f)
    return unstable


def known_files(conn: duckdb.DuckDBPyConnection, processor: str) -> set[str]:
    """The session files `processor` has a state row for (processed at some size, or marked unchanged)."""
    return {key for (key,) in conn.execute(
        "SELECT session_file FROM session_processor_state WHERE processor_name = ?", [processor]).fetchall()}


def json_list(values: list) -> str:
    """A list as one JSON parameter, read with ``?::JSON::<TYPE>[]``: DuckDB binds a Python list value by value
    (each value tries to import pandas, a search of ``sys.path`` when it is not installed), 20,000 values in
    seconds; the text binds in ms."""
    import orjson

    return orjson.dumps(values).decode()


@dataclass(frozen=True)
class ProcessedMark:
    """One file a processor finished: written by `mark_processed`."""

    session_file: str
    project: str
    """Stored in the ``username`` column, the name the table was created with."""
    items_extracted: int
    file_hash: str
    file_size: int
    byte_offset: int
    tail_hash: str | None
    processed_at: datetime


_MARK_COLUMNS = (
    ("processor_name", "VARCHAR"), ("session_file", "VARCHAR"), ("username", "VARCHAR"),
    ("processed_at", "TIMESTAMPTZ"), ("items_extracted", "BIGINT"), ("file_hash", "VARCHAR"),
    ("file_size", "BIGINT"), ("byte_offset", "BIGINT"), ("tail_hash", "VARCHAR"),
)


def mark_processed(conn: duckdb.DuckDBPyConnection, processor: str, marks: Sequence[ProcessedMark]) -> None:
    """Upsert processor state for `marks` in one statement (items accumulate for incremental reads)."""
    if not marks:
        return
    rows = [
        {
            "processor_name": processor,
            "session_file": m.session_file,
            "username": m.project,
            "processed_at": m.processed_at,
            "items_extracted": m.items_extracted,
            "file_hash": m.file_hash,
            "file_size": m.file_size,
            "byte_offset": m.byte_offset,
            "tail_hash": m.tail_hash,
        }
        for m in marks
    ]
    with staged_rows(conn, "_marks", rows, _MARK_COLUMNS):
        conn.execute(
            """INSERT INTO session_processor_state
                 (processor_name, session_file, username, processed_at, items_extracted, file_hash,
                  file_size, byte_offset, tail_hash)
               SELECT processor_name, session_file, username, processed_at, items_extracted, file_hash,
                      file_size, byte_offset, tail_hash FROM _marks
               ON CONFLICT (processor_name, session_file) DO UPDATE SET
                 username = excluded.username, processed_at = excluded.processed_at,
                 items_extracted = excluded.items_extracted, file_hash = excluded.file_hash,
                 file_size = excluded.file_size, byte_offset = excluded.byte_offset,
                 tail_hash = excluded.tail_hash"""
        )


_SEEN_COLUMNS = (
    ("path", "VARCHAR"), ("project", "VARCHAR"), ("size", "BIGINT"), ("mtime_ns", "BIGINT"),
    ("file_hash", "VARCHAR"), ("byte_offset", "BIGINT"), ("seen", "TIMESTAMPTZ"),
)


def record_session_files(conn: duckdb.DuckDBPyConnection, rows: Sequence[dict]) -> None:
    """Upsert `session_files` rows: dicts with path, project, size, mtime_ns, file_hash, byte_offset.

    ``first_seen`` is kept from the first sighting; ``last_seen`` moves to now. A None hash or
    offset leaves the stored value in place (the file was seen but not read).
    """
    if not rows:
        return
    now = datetime.now(UTC)
    with staged_rows(conn, "_seen", [{**r, "seen": now} for r in rows], _SEEN_COLUMNS):
        conn.execute(
            """INSERT INTO session_files (path, project, size, mtime_ns, file_hash, first_seen, last_seen,
                                          byte_offset)
               SELECT path, project, size, mtime_ns, file_hash, seen, seen, byte_offset FROM _seen
               ON CONFLICT (path) DO UPDATE SET
                 project = excluded.project, size = excluded.size, mtime_ns = excluded.mtime_ns,
                 file_hash = coalesce(excluded.file_hash, session_files.file_hash),
                 byte_offset = coalesce(excluded.byte_offset, session_files.byte_offset),
                 last_seen = excluded.last_seen"""
        )


def record_file_hashes(conn: duckdb.DuckDBPyConnection, hashes: dict[str, str]) -> None:
    """Set the hash of files `record_session_files` recorded earlier without one (``{path: hash}``): the workers
    that read them hashed them meanwhile. One UPDATE of that column, not an upsert of whole rows (a first
    report of 2,000 sessions does this after its commit: 10 ms instead of 40)."""
    if not hashes:
        return
    with staged_rows(conn, "_hashes", [{"path": p, "file_hash": h} for p, h in hashes.items()], _HASH_COLUMNS):
        conn.execute("UPDATE session_files SET file_hash = h.file_hash FROM _hashes h "
                     "WHERE session_files.path = h.path")


_HASH_COLUMNS = (("path", "VARCHAR"), ("file_hash", "VARCHAR"))


def record_malformed_lines(conn: duckdb.DuckDBPyConnection, lines: Sequence[tuple[str, MalformedLine]]) -> None:
    """Keep skipped lines (session key, offset, error, preview) where a person can find them."""
    if not lines:
        return
    now = datetime.now(UTC)
    conn.executemany(
        """INSERT INTO malformed_lines VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (session_key, byte_offset) DO UPDATE SET
             length = excluded.length, error = excluded.error, preview = excluded.preview,
             seen_at = excluded.seen_at""",
        [[key, m.byte_offset, m.length, m.error, m.preview, now] for key, m in lines],
    )


def scan_session_files(conn: duckdb.DuckDBPyConnection, files: Sequence[SessionFile], projects: set[str]) -> dict:
    """Compare ``files`` (what is on disk for ``projects``) with ``session_files`` and record them.

    Returns, per project of ``projects``, counts of ``files`` and ``bytes`` on disk, ``new``,
    ``changed`` (size or mtime moved) and ``missing`` (known, no longer on disk: the archive still has
    them). Reads no file content.
    """
    known = {
        r[0]: (r[1], r[2], r[3])
        for r in conn.execute(
            "SELECT path, size, mtime_ns, project FROM session_files WHERE list_contains(?, project)",
            [sorted(projects)],
        ).fetchall()
    }
    counts = {p: dict.fromkeys(("files", "bytes", "new", "changed", "missing"), 0) for p in projects}
    for f in files:
        c = counts.setdefault(f.project, dict.fromkeys(("files", "bytes", "new", "changed", "missing"), 0))
        c["files"] += 1
        c["bytes"] += f.size
        if f.key not in known:
            c["new"] += 1
        elif known[f.key][:2] != (f.size, f.mtime_ns):
            c["changed"] += 1
    on_disk = {f.key for f in files}
    for path, (_, _, project) in known.items():
        if path not in on_disk:
            counts[project]["missing"] += 1
    record_session_files(conn, [
        {"path": f.key, "project": f.project, "size": f.size, "mtime_ns": f.mtime_ns, "file_hash": None,
         "byte_offset": None}
        for f in files
    ])
    return counts
