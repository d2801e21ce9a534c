"""The DuckDB warehouse: schema, migration ladder, processor state, short-lived connections.

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

import duckdb
import pyarrow as pa

from resources.sessions import MalformedLine, SessionFile
from resources.settings import Settings

Connection = duckdb.DuckDBPyConnection
"""What `StateStore.connect()` yields; pipelines code names it through this alias, never through duckdb."""

LOCK_WAIT_SEC = 120.0
"""How long `connect()` keeps retrying while another process holds the database file."""

# Each entry is (version, statements). Statements must be idempotent on their own (IF NOT EXISTS),
# so a ladder interrupted half way can be re-run; the version row is written in the same transaction.
MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (
        1,
        (
            """CREATE TABLE IF NOT EXISTS session_files (
                path VARCHAR PRIMARY KEY,
                project VARCHAR NOT NULL,
                size BIGINT NOT NULL,
                mtime_ns BIGINT NOT NULL,
                file_hash VARCHAR,
                first_seen TIMESTAMPTZ NOT NULL,
                last_seen TIMESTAMPTZ NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS session_processor_state (
                processor_name VARCHAR NOT NULL,
                session_file VARCHAR NOT NULL,
                username VARCHAR NOT NULL,
                processed_at TIMESTAMPTZ NOT NULL,
                items_extracted BIGINT NOT NULL,
                file_hash VARCHAR NOT NULL,
                PRIMARY KEY (processor_name, session_file)
            )""",
        ),
    ),
    (
        2,
        (
            # Incremental reads: where each processor stopped, and a fingerprint of the bytes just
            # before that point, to tell an appended file from a rewritten one without re-reading it.
            "ALTER TABLE session_processor_state ADD COLUMN IF NOT EXISTS file_size BIGINT DEFAULT 0",
            "ALTER TABLE session_processor_state ADD COLUMN IF NOT EXISTS byte_offset BIGINT DEFAULT 0",
            "ALTER TABLE session_processor_state ADD COLUMN IF NOT EXISTS tail_hash VARCHAR",
            "ALTER TABLE session_files ADD COLUMN IF NOT EXISTS byte_offset BIGINT DEFAULT 0",
        ),
    ),
    (
        3,
        (
            """CREATE TABLE IF NOT EXISTS usage_messages (
                dedup_key VARCHAR NOT NULL,
                message_id VARCHAR,
                request_id VARCHAR,
                ts TIMESTAMPTZ NOT NULL,
                session_id VARCHAR,
                session_key VARCHAR NOT NULL,
                project VARCHAR NOT NULL,
                model VARCHAR,
                git_branch VARCHAR,
                cwd VARCHAR,
                is_sidechain BOOLEAN NOT NULL,
                agent_id VARCHAR,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                cache_creation_tokens BIGINT NOT NULL,
                cache_read_tokens BIGINT NOT NULL,
                cache_creation_1h_tokens BIGINT NOT NULL DEFAULT 0,
                cost_usd DOUBLE,
                computed_cost_usd DOUBLE,
                line_offset BIGINT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS model_prices (
                model VARCHAR PRIMARY KEY,
                input_per_mtok DOUBLE NOT NULL,
                output_per_mtok DOUBLE NOT NULL,
                cache_write_per_mtok DOUBLE NOT NULL,
                cache_write_1h_per_mtok DOUBLE NOT NULL,
                cache_read_per_mtok DOUBLE NOT NULL
            )""",
            "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
            # Lines that could not be parsed, kept so a person can find what was skipped.
            """CREATE TABLE IF NOT EXISTS malformed_lines (
                session_key VARCHAR NOT NULL,
                byte_offset BIGINT NOT NULL,
                length BIGINT NOT NULL,
                error VARCHAR NOT NULL,
                preview VARCHAR,
                seen_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (session_key, byte_offset)
            )""",
        ),
    ),
    (
        4,
        (
            # The archive (resources/archive/packs.py). A pack row is written only after its file is durable;
            # `tombstoned` packs are deleted by a sweep after the grace period, then their row goes.
            """CREATE TABLE IF NOT EXISTS packs (
                pack_key VARCHAR PRIMARY KEY,
                repo VARCHAR NOT NULL,
                bytes BIGINT NOT NULL,
                object_count BIGINT NOT NULL,
                snapshot_count BIGINT NOT NULL,
                state VARCHAR NOT NULL CHECK (state IN ('live', 'tombstoned')),
                created_at TIMESTAMPTZ NOT NULL,
                tombstoned_at TIMESTAMPTZ
            )""",
            """CREATE TABLE IF NOT EXISTS pack_index (
                repo VARCHAR NOT NULL,
                object_id VARCHAR NOT NULL,
                pack_key VARCHAR NOT NULL,
                size BIGINT NOT NULL,
                stored_size BIGINT NOT NULL,
                PRIMARY KEY (repo, object_id)
            )""",
            """CREATE TABLE IF NOT EXISTS snapshots (
                repo VARCHAR NOT NULL,
                session_key VARCHAR NOT NULL,
                file_hash VARCHAR NOT NULL,
                size BIGINT NOT NULL,
                mtime_ns BIGINT NOT NULL,
                chunks VARCHAR[] NOT NULL,
                pack_key VARCHAR NOT NULL,
                archived_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (repo, session_key, file_hash)
            )""",
        ),
    ),
    (
        5,
        (
            # Prices as bands (resources/usage/pricing.py): per model, per price period and long-context tier.
            # model_prices was a cache of the price table with one row per model; the old fingerprint goes
            # with it, so the next sync re-costs every stored row.
            "DROP TABLE IF EXISTS model_prices",
            """CREATE TABLE IF NOT EXISTS price_bands (
                model VARCHAR NOT NULL,
                valid_from TIMESTAMPTZ,
                valid_to TIMESTAMPTZ,
                above_tokens BIGINT NOT NULL,
                up_to_tokens BIGINT,
                input_per_mtok DOUBLE NOT NULL,
                output_per_mtok DOUBLE NOT NULL,
                cache_write_per_mtok DOUBLE NOT NULL,
                cache_write_1h_per_mtok DOUBLE NOT NULL,
                cache_read_per_mtok DOUBLE NOT NULL,
                matched VARCHAR NOT NULL,
                source VARCHAR NOT NULL
            )""",
            "DELETE FROM meta WHERE key = 'price_fingerprint'",
        ),
    ),
    (
        6,
        (
            # The archive's timeline: every time an ingest saw a version on disk (a file that goes
            # A -> B -> A has two observations of A). `snapshots` holds each content once.
            """CREATE TABLE IF NOT EXISTS snapshot_observations (
                repo VARCHAR NOT NULL,
                session_key VARCHAR NOT NULL,
                file_hash VARCHAR NOT NULL,
                mtime_ns BIGINT NOT NULL,
                observed_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (repo, session_key, file_hash, mtime_ns)
            )""",
            """INSERT INTO snapshot_observations
               SELECT repo, session_key, file_hash, mtime_ns, archived_at FROM snapshots ON CONFLICT DO NOTHING""",
        ),
    ),
    (
        7,
        (
            # Sources other than Claude Code (resources/sources/): each row says which agent wrote it, and
            # the output some agents report apart from output_tokens (Gemini's thoughts, OpenCode's
            # reasoning). Every row stored before is Claude Code's; its session keys and project names
            # (the partition keys) are unchanged, so nothing else moves.
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS agent VARCHAR DEFAULT 'claude'",
            "UPDATE usage_messages SET agent = 'claude' WHERE agent IS NULL",
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS extra_output_tokens BIGINT DEFAULT 0",
        ),
    ),
    (
        8,
        (
            # Team deployments (resources/team/): who a row came from. NULL on rows ingested from this
            # machine's own sessions folder; set on rows the central deployment ingests from pushed packs.
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS user_name VARCHAR",
            "ALTER TABLE usage_messages ADD COLUMN IF NOT EXISTS machine VARCHAR",
            # On a machine that pushes: which packs are already in which team bucket.
            """CREATE TABLE IF NOT EXISTS pushed_packs (
                remote VARCHAR NOT NULL,
                pack_key VARCHAR NOT NULL,
                manifest VARCHAR NOT NULL,
                pushed_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (remote, pack_key)
            )""",
            # On the central deployment: manifests and packs ingested (a pack pushed by two machines
            # is read once), and the first user and machine that pushed each session version.
            """CREATE TABLE IF NOT EXISTS team_manifests (
                manifest VARCHAR PRIMARY KEY,
                user_name VARCHAR NOT NULL,
                machine VARCHAR NOT NULL,
                packs BIGINT NOT NULL,
                ingested_at TIMESTAMPTZ NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS team_packs (
                pack_key VARCHAR PRIMARY KEY,
                manifest VARCHAR NOT NULL,
                user_name VARCHAR NOT NULL,
                machine VARCHAR NOT NULL,
                ingested_at TIMESTAMPTZ NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS team_snapshots (
                session_key VARCHAR NOT NULL,
                file_hash VARCHAR NOT NULL,
                user_name VARCHAR NOT NULL,
                machine VARCHAR NOT NULL,
                pack_key VARCHAR NOT NULL,
                PRIMARY KEY (session_key, file_hash)
            )""",
        ),
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]


def is_lock_conflict(exc: BaseException) -> bool:
    """True for the errors DuckDB raises while another process or writer holds the file."""
    text = str(exc)
    return isinstance(exc, duckdb.Error) and (
        "Could not set lock" in text or "Conflicting lock" in text or "database is locked" in text
    )


def fetch_one(conn: duckdb.DuckDBPyConnection, sql: str, params=None) -> tuple | None:
    """The first row of ``sql`` (or None), with the result fully consumed.

    DuckDB 2 refuses further work on a connection (``register``, ...) while a result is only partly
    fetched, which ``fetchone()`` leaves behind; use this instead.
    """
    rows = conn.execute(sql, params or []).fetchall()
    return rows[0] if rows else None


def migrate(conn: duckdb.DuckDBPyConnection) -> int:
    """Bring the schema to `LATEST_VERSION`; safe on every start and on a database at any older version.

    Returns the version the database was at before.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)"
    )
    current = fetch_one(conn, "SELECT coalesce(max(version), 0) FROM schema_version")[0]
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", [version, datetime.now(UTC)])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return current


class StateStore:
    """The warehouse file. Open one short-lived connection per unit of work with `connect()`."""

    def __init__(self, path: Path | str, lock_wait_sec: float = LOCK_WAIT_SEC):
        self.path = Path(path)
        self.lock_wait_sec = lock_wait_sec
        self._migrated = False

    @classmethod
    def from_settings(cls, settings: Settings) -> StateStore:
        return cls(settings.state_path)

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
                migrate(conn)
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
                if not is_lock_conflict(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)

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
    """State rows of `processor`, keyed by session file (all of them, or only those listed)."""
    sql = """SELECT session_file, processed_at, file_hash, file_size, byte_offset, tail_hash, items_extracted
             FROM session_processor_state WHERE processor_name = ?"""
    rows = conn.execute(sql, [processor]).fetchall()
    wanted = set(session_files) if session_files is not None else None
    return {
        r[0]: ProcessorFileState(r[1], r[2], r[3] or 0, r[4] or 0, r[5], r[6])
        for r in rows
        if wanted is None or r[0] in wanted
    }


@dataclass(frozen=True)
class ProcessedMark:
    """One file a processor finished: written by `mark_processed`."""

    session_file: str
    username: str
    items_extracted: int
    file_hash: str
    file_size: int
    byte_offset: int
    tail_hash: str | None
    processed_at: datetime


_MARK_SCHEMA = pa.schema(
    [
        ("processor_name", pa.string()),
        ("session_file", pa.string()),
        ("username", pa.string()),
        ("processed_at", pa.timestamp("us", tz="UTC")),
        ("items_extracted", pa.int64()),
        ("file_hash", pa.string()),
        ("file_size", pa.int64()),
        ("byte_offset", pa.int64()),
        ("tail_hash", pa.string()),
    ]
)


def mark_processed(conn: duckdb.DuckDBPyConnection, processor: str, marks: Sequence[ProcessedMark]) -> None:
    """Upsert processor state for `marks` in one statement (items accumulate for incremental reads)."""
    if not marks:
        return
    batch = pa.Table.from_pylist(
        [
            {
                "processor_name": processor,
                "session_file": m.session_file,
                "username": m.username,
                "processed_at": m.processed_at,
                "items_extracted": m.items_extracted,
                "file_hash": m.file_hash,
                "file_size": m.file_size,
                "byte_offset": m.byte_offset,
                "tail_hash": m.tail_hash,
            }
            for m in marks
        ],
        schema=_MARK_SCHEMA,
    )
    conn.register("_marks", batch)
    try:
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
    finally:
        conn.unregister("_marks")


_SEEN_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("project", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("file_hash", pa.string()),
        ("byte_offset", pa.int64()),
        ("seen", pa.timestamp("us", tz="UTC")),
    ]
)


def record_session_files(conn: duckdb.DuckDBPyConnection, rows: Sequence[dict]) -> None:
    """Upsert `session_files` rows: dicts with path, project, size, mtime_ns, file_hash, byte_offset.

    ``first_seen`` is kept from the first sighting; ``last_seen`` moves to now. A None hash or
    offset leaves the stored value in place (the file was seen but not read).
    """
    if not rows:
        return
    now = datetime.now(UTC)
    batch = pa.Table.from_pylist([{**r, "seen": now} for r in rows], schema=_SEEN_SCHEMA)
    conn.register("_seen", batch)
    try:
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
    finally:
        conn.unregister("_seen")


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
