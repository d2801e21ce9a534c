"""Dagster's SQLite event log, with one long-lived connection per database instead of one per write.

Dagster's `SqliteEventLogStorage` opens a new engine and connection for every write and closes it after.
Closing the last connection to a WAL database checkpoints it and deletes its WAL: measured here, 11
fsyncs and 4 file deletions per event, about 23 ms, which made Dagster's event log the largest cost of
an ingest run. `PooledSqliteEventLogStorage` keeps one pooled engine per database (the cross-run
index and the most recent run databases) and writes with ``synchronous=NORMAL``, the setting SQLite
recommends for WAL: a commit no longer waits for the disk, a killed process loses nothing, and an OS
crash or power cut can lose only the last commits, never corrupt the file.

The files and tables are Dagster's own, unchanged: a home can switch between this class and the
default at any time. Because commits now stay in the ``-wal`` file until a checkpoint, live log
watching (the UI's run page) is triggered by changes to either file, not only to the ``.db`` file.

It stands on Dagster internals: the private module it imports from, and the private members it
overrides or reads, all named in `DAGSTER_INTERNALS` and checked against `DAGSTER_MINOR` by
tests/test_event_log_storage.py, which fails naming them on any other Dagster minor. Measured on
2 shared cores (load 13, Dagster 1.13): a run of 300 materializations takes 5.4-6.1 s through this
class against 32 s through Dagster's default.

Shipped in ``pipelines/instance/dagster.yaml``::

    event_log_storage:
      module: pipelines.instance.event_log_storage
      class: PooledSqliteEventLogStorage
      config:
        base_dir: {env: DAGSTER_HOME}   # the instance's folder; event logs go under <base_dir>/history/runs
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from contextlib import contextmanager

import sqlalchemy as sa
from dagster import StringSource
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
    SqliteEventLogStorageWatchdog,
)

DAGSTER_MINOR = "1.13"
"""The Dagster minor whose internals this module was written and checked against."""

DAGSTER_INTERNALS = {
    "dagster._core.storage.event_log.sqlite.sqlite_event_log": (
        "INDEX_SHARD_NAME", "SQLITE_BUSY_TIMEOUT_SECONDS", "SqliteEventLogStorage", "SqliteEventLogStorageWatchdog"),
    "SqliteEventLogStorage": ("_connect", "_initdb", "conn_string_for_shard", "has_table",
                              "_has_asset_key_col_on_connection", "watch", "wipe", "dispose"),
    "SqliteEventLogStorage instance": ("_db_lock", "_initialized_dbs", "_obs", "_watchers", "_base_dir"),
    "SqliteEventLogStorageWatchdog instance": ("_patterns", "_log_path"),
    "SqliteEventLogStorageWatchdog": ("_process_log", "on_modified"),
}
"""Every private name of Dagster's this module relies on, by where it lives."""

# Run databases kept open per process; older ones are closed (and so checkpointed). A run writes to
# its own database only, so a long-lived process (webserver, daemon) holds at most this many.
OPEN_RUN_DATABASES = 4

_live_storages: weakref.WeakSet[PooledSqliteEventLogStorage] = weakref.WeakSet()


def _wal_synchronous_normal(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` that reuses one connection per database (see the module docstring)."""

    def __init__(self, base_dir: str, inst_data=None):
        self._engines: OrderedDict[str, sa.Engine] = OrderedDict()
        self._engines_lock = threading.Lock()
        self._schema_seen: set[str] = set()
        """Tables and asset_keys columns found in the index database (migrations only ever add them)."""
        super().__init__(os.path.join(base_dir, "history", "runs", ""), inst_data=inst_data)
        _live_storages.add(self)

    @classmethod
    def config_type(cls):
        return {"base_dir": StringSource}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(base_dir=config_value["base_dir"], inst_data=inst_data)

    def _engine(self, shard: str) -> sa.Engine:
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is not None:
                self._engines.move_to_end(shard)
                return engine
            engine = sa.create_engine(
                self.conn_string_for_shard(shard),
                pool_size=1,
                max_overflow=2,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
            )
            sa.event.listen(engine, "connect", _wal_synchronous_normal)
            self._engines[shard] = engine
            run_shards = [name for name in self._engines if name != INDEX_SHARD_NAME]
            for name in run_shards[:-OPEN_RUN_DATABASES]:
                self._engines.pop(name).dispose()
            return engine

    def has_table(self, table_name: str) -> bool:
        """Whether the index database has ``table_name``. Dagster asks before writing the tags of every asset
        event (400 times in a first ingest of 100 projects), each time through a new engine and connection;
        a table once there stays (migrations only add tables, `wipe` forgets them), so a yes is kept."""
        if table_name not in self._schema_seen:
            if not super().has_table(table_name):
                return False
            self._schema_seen.add(table_name)
        return True

    def _has_asset_key_col_on_connection(self, conn, column_name: str) -> bool:
        """Whether ``asset_keys`` has ``column_name``: asked for every asset event, a schema reflection each
        time; a yes is kept, as in `has_table`."""
        seen = f"asset_keys.{column_name}"
        if seen not in self._schema_seen:
            if not super()._has_asset_key_col_on_connection(conn, column_name):
                return False
            self._schema_seen.add(seen)
        return True

    @contextmanager
    def _connect(self, shard: str):
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def watch(self, run_id, cursor, callback) -> None:
        if not self._obs:
            from watchdog.observers import Observer

            self._obs = Observer()
            self._obs.start()
        handler = _WalAwareWatchdog(self, run_id, callback, cursor)
        self._watchers[run_id][callback] = (handler, self._obs.schedule(handler, self._base_dir, recursive=True))

    def close_connections(self) -> None:
        """Close every pooled connection (the last close checkpoints the database)."""
        with self._engines_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()

    def wipe(self) -> None:
        self.close_connections()
        self._schema_seen.clear()
        super().wipe()

    def dispose(self) -> None:
        self.close_connections()
        super().dispose()


class _WalAwareWatchdog(SqliteEventLogStorageWatchdog):
    """Dagster's run-log watchdog, fired by the run database's ``-wal`` file as well as the ``.db``."""

    def __init__(self, event_log_storage, run_id, callback, cursor):
        super().__init__(event_log_storage, run_id, callback, cursor)
        self._patterns = [self._log_path, self._log_path + "-wal"]

    def on_modified(self, event) -> None:
        self._process_log()


def _forget_connections_after_fork() -> None:
    # A forked child must not use (or close) its parent's SQLite connections.
    for storage in list(_live_storages):
        for engine in storage._engines.values():
            engine.dispose(close=False)
        storage._engines.clear()
        storage._engines_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_connections_after_fork)
