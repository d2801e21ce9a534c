"""The SQLite settings of a Dagster instance's own databases: WAL, ``synchronous=NORMAL``, from the first statement.

Dagster creates a SQLite instance's databases (runs, schedules, the event log index, one per run) in
SQLite's default rollback-journal mode and turns WAL on only after creating their tables, each table and
index a transaction with its own journal file and fsyncs: 366 fdatasyncs for a new instance and its first
run, about 1 s of a first `sessionlake ingest` on a loaded disk. Its run and schedule databases then
commit with ``synchronous=FULL``, an fsync per commit.

`use_for(folder)` makes every SQLite connection SQLAlchemy opens in this process on a database under
``folder`` start in WAL with ``synchronous=NORMAL`` (SQLite's recommended setting for WAL): a killed
process loses nothing, and an OS crash or power cut can lose the last commits, never corrupt a file.
A run whose last status was lost that way stays STARTED, and is found and failed as any dead run is
(`pipelines.instance.run_recovery`), so its partitions are asked for again. It also keeps one idle
connection to each run and schedule database (`_hold`), so that Dagster's connection per use never
closes the last one, which checkpoints and syncs the database each time. A new instance and its first
ingest of 100 projects: 366 fdatasyncs of Dagster's databases before, about 30 with both. The files stay
Dagster's own, in the mode Dagster leaves them in (it turns WAL on itself); any process can open them
with any settings.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections import OrderedDict

_folders: set[str] = set()
_lock = threading.Lock()
_held: OrderedDict[str, sqlite3.Connection] = OrderedDict()
"""One idle connection per run or schedule database (see `_hold`), the most recently opened last."""
HELD_DATABASES = 4
"""Idle connections kept at most per process (an instance has one run and one schedule database; tests
open many instances in one process)."""
_inherited: list[sqlite3.Connection] = []
"""A forked child's copies of its parent's idle connections: never used, never closed by it."""
EVENT_LOG_FOLDER = os.path.join("history", "runs", "")
"""The event log's databases, under the home: the pooled event log keeps its own connections to them."""


def use_for(folder: str | os.PathLike) -> None:
    """Give SQLite databases under ``folder`` (an instance's home) WAL and ``synchronous=NORMAL`` in this
    process, from their first connection on. Idempotent."""
    import sqlalchemy as sa

    with _lock:
        if not _folders:
            sa.event.listen(sa.engine.Engine, "connect", _on_connect)
        _folders.add(os.path.join(os.path.realpath(folder), ""))


def _on_connect(dbapi_connection, _record) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    try:
        path = next((row[2] for row in cursor.execute("PRAGMA database_list") if row[1] == "main"), "")
        if path and any(os.path.realpath(path).startswith(folder) for folder in _folders):
            cursor.execute("PRAGMA synchronous=NORMAL")
            # another process holding a database Dagster is creating: Dagster's own switch to WAL follows
            with contextlib.suppress(sqlite3.OperationalError):
                mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode == "wal" and EVENT_LOG_FOLDER not in path:
                    _hold(path)
    finally:
        cursor.close()


def _hold(path: str) -> None:
    """Keep an idle connection to the WAL database at ``path`` open, so that closing Dagster's connections
    never closes the last one. Dagster opens and closes a connection for every use of its run and schedule
    databases, and SQLite checkpoints a WAL database, syncs it and deletes its WAL whenever its last
    connection closes: about 60 fsyncs in a first ingest. The WAL is checkpointed when it grows past
    SQLite's limit (1,000 pages) instead; what it holds is committed, and read by every connection."""
    with _lock:
        if path in _held:
            _held.move_to_end(path)
            return
        conn = sqlite3.connect(path, check_same_thread=False)
        try:
            conn.execute("PRAGMA schema_version").fetchone()  # a read opens the WAL and keeps it open
        except sqlite3.Error:
            conn.close()
            return
        _held[path] = conn
        while len(_held) > HELD_DATABASES:
            _held.popitem(last=False)[1].close()


def _forget_after_fork() -> None:
    # a forked child must not close its parent's connections (closing the last one checkpoints)
    global _lock
    _inherited.extend(_held.values())
    _held.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
