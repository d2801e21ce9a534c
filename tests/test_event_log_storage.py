"""The pooled SQLite event log (pipelines/instance/event_log_storage.py) on a real instance made from the shipped
dagster.yaml: runs, materializations and pool slots work, Dagster's default storage reads the same files,
a batch of events is stored as Dagster's default stores them one by one, and a run's live log watch fires
while its commits still sit in the WAL."""

import sqlite3
import threading
import time

import dagster as dg
import pytest

from pipelines.instance.event_log_storage import OPEN_RUN_DATABASES, PooledSqliteEventLogStorage
from pipelines.instance.home import install_instance_yaml

pytestmark = pytest.mark.unit

PARTITIONS = [f"p{i}" for i in range(30)]


@dg.op
def emit(context):
    for key in PARTITIONS:
        context.log_event(dg.AssetMaterialization(asset_key="x", partition=key, metadata={"rows": len(key)},
                                                  tags={"dagster/data_version": "v1"}))


@dg.job(executor_def=dg.in_process_executor)
def emit_job():
    emit()


@pytest.fixture
def home(tmp_path):
    folder = tmp_path / "dagster"
    folder.mkdir()
    install_instance_yaml(folder)
    return folder


def test_the_shipped_instance_writes_through_the_pool_and_the_default_storage_reads_the_same_files(home):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        result = emit_job.execute_in_process(instance=instance)
        assert result.success
        assert len(instance.fetch_materializations(dg.AssetKey("x"), limit=100).records) == len(PARTITIONS)
        logged = len(instance.all_logs(result.run_id))

    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as default:
        assert not isinstance(default.event_log_storage, PooledSqliteEventLogStorage)
        assert len(default.all_logs(result.run_id)) == logged
        records = default.fetch_materializations(dg.AssetKey("x"), limit=100).records
        assert sorted(r.partition_key for r in records) == sorted(PARTITIONS)
        # every event's tags were written (the pooled log asks once whether their table is there)
        tags = default.get_event_tags_for_asset(dg.AssetKey("x"), filter_tags={"dagster/data_version": "v1"})
        assert len(tags) == len(PARTITIONS)


@dg.op
def emit_mixed(context):
    """Materializations (two of each partition), observations and an asset check evaluation of two assets."""
    for round_ in range(2):
        for key in PARTITIONS[:5]:
            context.log_event(dg.AssetMaterialization(asset_key="x", partition=key, metadata={"round": round_},
                                                      tags={"dagster/data_version": f"{key}-{round_}"}))
            context.log_event(dg.AssetObservation(asset_key="y", partition=key, metadata={"round": round_},
                                                  tags={"dagster/data_version": key}))
    context.log_event(dg.AssetCheckEvaluation(asset_key=dg.AssetKey("x"), check_name="c", passed=True))
    context.log_event(dg.AssetMaterialization(asset_key="y", metadata={"last": True}))


@dg.job(executor_def=dg.in_process_executor)
def mixed_job():
    emit_mixed()


def _tables(folder, run_id) -> dict[str, list]:
    """What the event log holds in its index and run databases, ids included, creation times left out."""
    tables = {}
    for db, names in (("index", ("event_logs", "asset_keys", "asset_event_tags", "asset_check_executions")),
                      (run_id, ("event_logs",))):
        with sqlite3.connect(folder / "history" / "runs" / f"{db}.db") as conn:
            for name in names:
                cursor = conn.execute(f"SELECT * FROM {name} ORDER BY id")
                columns = [c[0] for c in cursor.description]
                tables[f"{'index' if db == 'index' else 'run'}.{name}"] = [
                    {c: v for c, v in zip(columns, row, strict=True) if c not in ("create_timestamp",
                                                                                   "updated_timestamp")}
                    for row in cursor.fetchall()]
    return tables


def test_a_batch_is_stored_as_the_default_storage_stores_its_events_one_by_one(tmp_path, home, monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    with dg.DagsterInstance.from_config(str(home)) as source:
        run_id = mixed_job.execute_in_process(instance=source).run_id
        entries = source.all_logs(run_id)
    stored = {}
    for name, pooled in (("default", False), ("pooled", True)):
        folder = tmp_path / name
        folder.mkdir()
        install_instance_yaml(folder)
        if not pooled:
            (folder / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with dg.DagsterInstance.from_config(str(folder)) as instance:
            storage = instance.event_log_storage
            assert isinstance(storage, PooledSqliteEventLogStorage) == pooled
            batch = [e for e in entries if e.is_dagster_event and (
                e.dagster_event.asset_key or e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION")]
            assert len(batch) == 22
            for entry in entries:
                if entry not in batch:
                    storage.store_event(entry)
                elif pooled and entry is batch[0]:
                    storage.store_event_batch(batch)
                elif not pooled:
                    storage.store_event(entry)
            latest = instance.get_latest_materialization_event(dg.AssetKey("x"))
            assert (latest.dagster_event.partition, latest.asset_materialization.metadata["round"].value) == ("p4", 1)
        stored[name] = _tables(folder, run_id)
    assert stored["pooled"] == stored["default"]
    assert len(stored["pooled"]["index.asset_event_tags"]) == 20


def test_a_batch_that_fails_takes_back_what_it_wrote_so_dagster_can_store_its_events_one_by_one(home, monkeypatch):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run_id = mixed_job.execute_in_process(instance=instance).run_id
        storage = instance.event_log_storage
        batch = [e for e in instance.all_logs(run_id) if e.is_dagster_event and e.dagster_event.asset_key]
        before = _tables(home, run_id)
        with sqlite3.connect(home / "history" / "runs" / "index.db") as conn:  # the asset rows cannot be written
            conn.execute("ALTER TABLE asset_keys RENAME TO asset_keys_away")
        with pytest.raises(Exception, match="asset_keys"):
            storage.store_event_batch(batch)
        with sqlite3.connect(home / "history" / "runs" / "index.db") as conn:
            conn.execute("ALTER TABLE asset_keys_away RENAME TO asset_keys")
        assert _tables(home, run_id) == before
        storage.store_event_batch(batch)  # stored again, once
        after = _tables(home, run_id)
        assert len(after["run.event_logs"]) == len(before["run.event_logs"]) + len(batch)
        assert len(after["index.event_logs"]) == len(before["index.event_logs"]) + len(batch)


def test_an_instance_opened_by_the_cli_keeps_every_sqlite_database_in_wal_with_normal_sync(tmp_path, monkeypatch):
    """Also: Dagster's migration scripts are read once (pipelines/instance/migration_scripts.py) and every
    database is still stamped at Dagster's head."""
    import sqlalchemy as sa
    from alembic.script import ScriptDirectory

    import pipelines.instance.migration_scripts as migration_scripts
    from pipelines.instance.home import open_instance

    loads = []
    load_revisions = ScriptDirectory._load_revisions

    def counted(self):
        loads.append(self.dir)
        yield from load_revisions(self)

    monkeypatch.setattr(ScriptDirectory, "_load_revisions", counted)
    monkeypatch.setattr(migration_scripts, "_scripts", {})  # as in a new process
    folder = tmp_path / "dagster"
    folder.mkdir()
    install_instance_yaml(folder)
    monkeypatch.setenv("DAGSTER_HOME", str(folder))
    with open_instance() as instance:
        assert emit_job.execute_in_process(instance=instance).success
        # runs, schedules, the event log index and the run's own database, each checked and stamped: 9 loads
        # without the cache; a Dagster that builds its ScriptDirectory other than through from_config fails here
        assert len(loads) == 1, loads
        head = instance.run_storage.alembic_version()[1]
        with instance.run_storage.connect() as conn:  # Dagster's own run storage, one connection per use
            assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        # Dagster's connection per use of the run database never closed the last one: no checkpoint
        # deleted its WAL, and what the WAL holds is what any other connection reads
        assert (folder / "history" / "runs.db-wal").stat().st_size > 0
        with sqlite3.connect(folder / "history" / "runs.db") as conn:
            assert conn.execute("SELECT status FROM runs").fetchall() == [("SUCCESS",)]
    databases = sorted(folder.rglob("*.db"))
    assert {p.name for p in databases} >= {"runs.db", "index.db", "schedules.db"}
    assert len(databases) >= 4  # the run's own too
    for path in databases:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal", path
            assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)], path
    elsewhere = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")  # a database outside the instance
    with elsewhere.connect() as conn:
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 2  # FULL, SQLite's default
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "delete"
    elsewhere.dispose()


def test_pool_slots_are_claimed_and_freed_through_the_pooled_storage(home):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.set_concurrency_slots("some_pool", 1)
        first = instance.event_log_storage.claim_concurrency_slot("some_pool", "run-a", "step")
        second = instance.event_log_storage.claim_concurrency_slot("some_pool", "run-b", "step")
        assert (first.is_claimed, second.is_claimed) == (True, False)
        instance.event_log_storage.free_concurrency_slots_for_run("run-a")
        assert instance.event_log_storage.claim_concurrency_slot("some_pool", "run-b", "step").is_claimed


def test_a_watch_sees_events_committed_to_the_wal_before_any_checkpoint(home):
    with dg.DagsterInstance.from_config(str(home)) as writer, dg.DagsterInstance.from_config(str(home)) as reader:
        run = writer.create_run_for_job(emit_job)
        writer.report_engine_event("the run database exists before the watch starts", run)
        seen: list[str] = []
        got_all = threading.Event()

        def on_event(entry, _cursor):
            seen.append(entry.message)
            if sum(m.startswith("ping") for m in seen) == 3:
                got_all.set()

        reader.event_log_storage.watch(run.run_id, None, on_event)
        try:
            for i in range(3):
                time.sleep(0.2)
                writer.report_engine_event(f"ping {i}", run)
            shard = home / "history" / "runs" / f"{run.run_id}.db"
            assert shard.with_name(shard.name + "-wal").stat().st_size > 0  # still in the WAL: no checkpoint
            assert got_all.wait(timeout=30), f"the watch saw only {seen}"
        finally:
            reader.event_log_storage.end_watch(run.run_id, on_event)


def test_a_long_lived_process_keeps_only_the_newest_run_databases_open(home):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        runs = [instance.create_run_for_job(emit_job) for _ in range(OPEN_RUN_DATABASES + 3)]
        for run in runs:
            instance.report_engine_event("hello", run)
        open_runs = [name for name in storage._engines if name != "index"]
        assert open_runs == [run.run_id for run in runs[-OPEN_RUN_DATABASES:]]
        assert all(len(instance.all_logs(run.run_id)) >= 1 for run in runs)  # closed ones reopen on demand


def test_the_dagster_internals_it_stands_on_are_there_and_were_checked_on_this_minor(home):
    """Fails on the next Dagster minor, naming what to re-check, before a changed internal can corrupt a log."""
    import importlib

    from dagster.version import __version__

    import pipelines.instance.event_log_storage as pooled

    module = importlib.import_module(next(iter(pooled.DAGSTER_INTERNALS)))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        watchdog = pooled.SqliteEventLogStorageWatchdog(storage, "run", lambda *args: None, None)  # Dagster's own
        owners = {"SqliteEventLogStorage": pooled.SqliteEventLogStorage, "SqliteEventLogStorage instance": storage,
                  "SqliteEventLogStorageWatchdog": pooled.SqliteEventLogStorageWatchdog,
                  "SqliteEventLogStorageWatchdog instance": watchdog}
        missing = [f"{where}.{name}" for where, names in pooled.DAGSTER_INTERNALS.items()
                   for name in names if not hasattr(owners.get(where, module), name)]
    assert not missing, f"Dagster {__version__} lacks {', '.join(missing)}: see pipelines/instance/event_log_storage.py"
    assert __version__.rsplit(".", 1)[0] == pooled.DAGSTER_MINOR, (
        f"Dagster {__version__}: pipelines/instance/event_log_storage.py subclasses Dagster's private SQLite event log "
        f"and was checked on {pooled.DAGSTER_MINOR} only. Read the diff of {next(iter(pooled.DAGSTER_INTERNALS))} "
        "for the names in DAGSTER_INTERNALS, re-measure the pooled log against the default (a run of 300 "
        "materializations), then set DAGSTER_MINOR, or drop the class from pipelines/instance/dagster.yaml.")
