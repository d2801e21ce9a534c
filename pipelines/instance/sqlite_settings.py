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
(`pipelines.instance.run_recovery`), so its partitions are asked for again. The files stay Dagster's
own, in the mode Dagster leaves them in (it turns WAL on itself); any process can open them with any
settings.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading

_folders: set[str] = set()
_lock = threading.Lock()


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
                cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()
