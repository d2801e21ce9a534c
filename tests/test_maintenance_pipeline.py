"""The maintenance job, health sensor, nightly schedule and checks on a real Dagster instance and Lance tables."""

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from pipelines.definitions import defs as all_defs
from pipelines.defs import resources as dagster_resources
from pipelines.defs.lance import definitions as maintenance
from pipelines.defs.lance.assets import JOB_NAME, LOCATION_BOOT_ID, PHASE_TAG, lance_storage
from pipelines.defs.lance.checks import memory_checks
from pipelines.defs.lance.schedules import lance_maintenance_nightly
from pipelines.defs.resources import LanceResource
from pipelines.defs.tags import POOL_LANCE_MAINTENANCE
from resources.config.settings import Settings
from resources.memory import maintenance as lm
from resources.memory.events import query_events, write_event
from resources.memory.schema import EDGES, RECORDS, new_edge, new_record
from tests.warehouse_holder import held_by_another_process

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:optimize")]

DEFAULTS = Settings(home=Path("/unused"), sessions_dir=Path("/unused"))
"""The default intervals and retention (the tests' environment sets none of them)."""


@pytest.fixture
def lance(tmp_path, monkeypatch):
    for name in ("SESSIONLAKE_LANCE_VERSIONS_THRESHOLD", "SESSIONLAKE_LANCE_SMALL_FRAGMENTS_THRESHOLD",
                 "SESSIONLAKE_LANCE_RETENTION_FLOOR_SEC"):
        monkeypatch.delenv(name, raising=False)
    return LanceResource(home=str(tmp_path / "home"))


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def small_writes(store, n=10):
    for i in range(n):
        store.upsert_records([new_record(f"r{i}", f"note {i}", tier="episodic")])
        store.upsert_edges([new_edge(f"r{i}", f"r{i + 1}", "next")])


def tick(instance, lance, cursor=None):
    """One tick through Dagster's own evaluation (the daemon's path), not the decorated function."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"lance": lance},
                                      repository_def=all_defs.get_repository_def())
    return all_defs.get_repository_def().get_sensor_def("lance_health_sensor").evaluate_tick(context)


def schedule_tick(instance, lance):
    context = dg.build_schedule_context(instance=instance, resources={"lance": lance},
                                        repository_def=all_defs.get_repository_def())
    return lance_maintenance_nightly.evaluate_tick(context)


def reason(result) -> str:
    return result.skip_message or ""


def writer_run(instance, asset: str | None = None) -> dg.DagsterRun:
    """A started run that writes Lance: the ingest job, or (``asset``) a UI-style backfill run of the
    implicit asset job selecting just that asset, which carries no sessionlake tag at all."""
    if asset is None:
        job = all_defs.resolve_job_def("ingest_sessions")
        return instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    job = all_defs.resolve_implicit_global_asset_job_def()
    return instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED,
                                       asset_selection=frozenset({dg.AssetKey(asset)}))


def settled_cursor(last_request_ts: float) -> str:
    return json.dumps({"boot": LOCATION_BOOT_ID, "last_request_ts": last_request_ts})


def run_job(instance, lance, run_config=None, raise_on_error=True) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions.merge(maintenance.build_defs(DEFAULTS), dg.Definitions(resources={"lance": lance}))
    job = defs.resolve_job_def(JOB_NAME)
    return job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=raise_on_error)


def phases(store) -> list[str]:
    return [e["data"]["phase"] for e in query_events(store, kind=lm.OPTIMIZED_EVENT)]


def checks_by_name(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def test_first_tick_requests_startup_exactly_once(instance, lance):
    store = lance.store()
    small_writes(store, 3)
    first = tick(instance, lance)
    [request] = first.run_requests
    assert request.tags[PHASE_TAG] == "startup"
    run_job(instance, lance, request.run_config)
    second = tick(instance, lance, first.cursor)
    assert not second.run_requests and reason(second).startswith("not due")
    assert tick(instance, lance, second.cursor).run_requests == []
    assert phases(store) == ["startup"]


def test_a_fresh_home_gets_no_startup_run_and_the_start_is_remembered(instance, lance):
    lance.store()
    first = tick(instance, lance)
    assert first.run_requests == [] and reason(first).startswith("not due: healthy")
    assert json.loads(first.cursor)["boot"] == LOCATION_BOOT_ID
    small_writes(lance.store(), 3)
    assert tick(instance, lance, first.cursor).run_requests == [], "startup is over: only thresholds and the interval"


def test_a_tick_while_a_run_holds_the_new_homes_warehouse_skips_instead_of_failing(instance, lance, monkeypatch):
    # a new home during its first ingest: no table folder yet, so the lost-table check reads the warehouse
    monkeypatch.setattr(dagster_resources, "SENSOR_LOCK_WAIT_SEC", 0.3)
    state = lance.settings().state_path
    state.parent.mkdir(parents=True)
    with held_by_another_process(state):
        result = tick(instance, lance, cursor="{}")
    assert not result.run_requests and "busy" in result.skip_message and result.cursor == "{}"
    assert "not due" in tick(instance, lance).skip_message  # once it is free, the tick checks the tables


def test_not_due_then_due_after_the_interval(instance, lance):
    lance.store()
    not_due = tick(instance, lance, settled_cursor(time.time()))
    assert not_due.run_requests == []
    assert "not due" in reason(not_due) and "periodic optimize in" in reason(not_due)
    due = tick(instance, lance, settled_cursor(time.time() - DEFAULTS.lance_optimize_interval_sec - 1))
    [request] = due.run_requests
    assert request.tags[PHASE_TAG] == "periodic"
    assert request.run_config["ops"]["lance_storage"]["config"]["phase"] == "periodic"
    assert json.loads(due.cursor)["last_request_ts"] > time.time() - 60


def test_threshold_crossed_on_small_fragments(instance, lance, monkeypatch):
    small_writes(lance.store(), 10)
    assert tick(instance, lance, settled_cursor(time.time())).run_requests == []
    monkeypatch.setenv("SESSIONLAKE_LANCE_SMALL_FRAGMENTS_THRESHOLD", "5")
    [request] = tick(instance, lance, settled_cursor(time.time())).run_requests
    assert request.tags[PHASE_TAG] == "threshold"
    assert "records: 10 small fragments > 5" in request.tags["sessionlake/maintenance-reason"]


def test_versions_trigger_only_once_the_retention_can_remove_them(instance, lance, monkeypatch):
    store = lance.store()
    small_writes(store, 10)
    monkeypatch.setenv("SESSIONLAKE_LANCE_VERSIONS_THRESHOLD", "5")
    young = tick(instance, lance, settled_cursor(time.time()))
    assert young.run_requests == [], "versions younger than the retention cannot be pruned: no run"
    old = time.time() - DEFAULTS.lance_optimize_retention_sec - 60
    for manifest in (lm.table_dir(store, EDGES) / "_versions").glob("*.manifest"):
        os.utime(manifest, (old, old))
    [request] = tick(instance, lance, settled_cursor(time.time())).run_requests
    assert "edges: 10 prunable versions > 5" in request.tags["sessionlake/maintenance-reason"]


def test_skipped_while_a_writer_run_is_in_progress_then_runs(instance, lance):
    store = lance.store()
    small_writes(store, 3)
    writer = writer_run(instance)
    skipped = tick(instance, lance)
    assert skipped.run_requests == []
    assert "writers_active" in reason(skipped) and "ingest_sessions" in reason(skipped)
    assert skipped.cursor is None, "the startup run is still owed"
    [event] = query_events(store, kind=lm.SKIPPED_EVENT)
    assert event["data"]["reason"] == "writers_active" and event["data"]["phase"] == "startup"
    instance.report_run_canceled(writer)
    [request] = tick(instance, lance, skipped.cursor).run_requests
    assert request.tags[PHASE_TAG] == "startup"


def test_never_two_maintenance_runs_at_once(instance, lance):
    lance.store()
    job = dg.Definitions.merge(maintenance.build_defs(DEFAULTS),
                               dg.Definitions(resources={"lance": lance})).resolve_job_def(JOB_NAME)
    instance.create_run_for_job(job, status=dg.DagsterRunStatus.NOT_STARTED)
    result = tick(instance, lance, settled_cursor(0.0))
    assert result.run_requests == [] and "maintenance_running" in reason(result)
    # the second guard: the maintenance step runs in its own pool (limit 1 in pipelines/instance/dagster.yaml)
    assert lance_storage.op.pool == POOL_LANCE_MAINTENANCE


def test_a_ui_backfill_of_memory_records_blocks_maintenance_without_any_tag(instance, lance):
    small_writes(lance.store(), 3)
    writer_run(instance, asset="session_archive")
    assert tick(instance, lance).run_requests, "a run that writes no Lance table does not block"
    run = writer_run(instance, asset="memory_records")
    assert not run.tags.get("sessionlake/queue")
    skipped = tick(instance, lance)
    assert skipped.run_requests == [] and "writers_active" in reason(skipped)
    assert schedule_tick(instance, lance).skip_message.startswith("periodic optimize skipped (writers_active)")


def test_nightly_schedule_runs_periodic_and_waits_for_writers(instance, lance):
    store = lance.store()
    [request] = schedule_tick(instance, lance).run_requests
    assert request.tags[PHASE_TAG] == "periodic"
    retention = request.run_config["ops"]["lance_storage"]["config"]["retention_sec"]
    assert retention == DEFAULTS.lance_optimize_retention_sec
    writer_run(instance)
    skipped = schedule_tick(instance, lance)
    assert not skipped.run_requests and "writers_active" in skipped.skip_message
    assert query_events(store, kind=lm.SKIPPED_EVENT)[0]["data"]["phase"] == "periodic"


def test_job_reports_numbers_and_table_and_checks_pass(instance, lance):
    store = lance.store()
    small_writes(store, 10)
    result = run_job(instance, lance, {"ops": {"lance_storage": {"config": {
        "phase": "manual", "retention_sec": 0, "force": True}}}})
    mats = {m.asset_key.to_user_string(): m for m in result.asset_materializations_for_node("lance_storage")}
    assert mats["lance_events"].metadata["dagster/row_count"].value >= 1, "the optimize report is an event"
    meta = mats["lance_storage"].metadata
    assert meta["records_rows_before"].value == meta["records_rows_after"].value == 10
    assert meta["records_versions_after"].value < meta["records_versions_before"].value
    assert isinstance(meta["edges_size_bytes_after"], dg.IntMetadataValue)
    assert isinstance(meta["events_elapsed_sec"], dg.FloatMetadataValue)
    assert meta["tables_failed"].value == 0
    assert "| records | 10 → 10 |" in meta["report"].value
    checks = checks_by_name(result)
    assert len(checks) == 8
    assert all(c.passed for c in checks.values()), {k: c.description for k, c in checks.items()}
    assert phases(store) == ["manual"]


def test_retention_below_floor_is_refused_unless_forced(instance, lance, monkeypatch):
    store = lance.store()
    small_writes(store, 3)
    result = run_job(instance, lance, {"ops": {"lance_storage": {"config": {"retention_sec": 60}}}},
                     raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("lance_storage")
    assert "below the floor" in failure.error.message
    assert phases(store) == []
    monkeypatch.setenv("SESSIONLAKE_LANCE_RETENTION_FLOOR_SEC", str(10 * 86400))
    refused = tick(instance, lance)
    assert refused.run_requests == [] and "below the floor" in reason(refused)
    nightly = schedule_tick(instance, lance)
    assert not nightly.run_requests and "below the floor" in nightly.skip_message


def test_version_and_fragment_checks_warn_above_and_error_at_ten_times(instance, lance, monkeypatch):
    store = lance.store()
    small_writes(store, 10)  # records ~14 versions (one per upsert, index creation), edges 11; 10 small fragments
    monkeypatch.setenv("SESSIONLAKE_LANCE_VERSIONS_THRESHOLD", "1")
    monkeypatch.setenv("SESSIONLAKE_LANCE_SMALL_FRAGMENTS_THRESHOLD", "5")
    checks = checks_by_name(run_job(instance, lance))  # default retention: young versions stay
    versions = checks["lance_storage:memory_versions"]
    assert not versions.passed and versions.severity == dg.AssetCheckSeverity.ERROR
    assert "records:" in versions.description and "> 1" in versions.description
    monkeypatch.setenv("SESSIONLAKE_LANCE_VERSIONS_THRESHOLD", "10")
    checks = checks_by_name(run_job(instance, lance))
    versions = checks["lance_storage:memory_versions"]
    assert not versions.passed and versions.severity == dg.AssetCheckSeverity.WARN
    assert checks["lance_storage:memory_small_fragments"].passed, "the optimize compacted them"


def test_rows_check_errors_when_the_last_optimize_lost_rows(instance, lance):
    store = lance.store()
    small_writes(store, 2)
    report = lm.optimize_lance_storage(store, timedelta(0))
    bad = {**report, RECORDS: {**report[RECORDS], "rows_after": report[RECORDS]["rows_before"] - 1}}
    write_event(store, lm.OPTIMIZED_EVENT, {"phase": "manual", "retention_days": 0, "per_table": bad,
                                            "total_elapsed_sec": 0.1})
    [rows_check] = [c for c in memory_checks if c.check_key.name == "memory_rows_preserved_by_optimize"]
    result = rows_check(lance=lance)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert "records: 1 row(s) fewer" in result.description


def test_cli_maintain_prints_the_table_and_refuses_a_short_retention(tmp_path, monkeypatch, capsys):
    from pipelines.cli.main import main
    from resources.config.settings import Settings
    from resources.memory.lance import LanceStore

    monkeypatch.setenv("SESSIONLAKE_HOME", str(tmp_path / "cli-home"))
    monkeypatch.delenv("SESSIONLAKE_LANCE_RETENTION_FLOOR_SEC", raising=False)
    store = LanceStore.from_settings(Settings.from_env())
    small_writes(store, 5)
    assert main(["maintain", "--retention", "0"]) == 2
    assert "below the floor" in capsys.readouterr().err
    assert phases(store) == []
    assert main(["maintain", "--retention", "0", "--force"]) == 0
    table = capsys.readouterr().out
    assert "| records | 5 → 5 |" in table and "| edges | 5 → 5 | 6 → 1 |" in table
    assert main(["maintain", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"records", "edges", "events", "provenance"} and report["edges"]["rows_after"] == 5
    assert phases(store) == ["manual", "manual"]


def test_a_table_lance_cannot_open_is_an_error_check_and_is_never_recreated(instance, lance):
    store = lance.store()
    small_writes(store, 3)
    versions = lm.table_dir(store, EDGES) / "_versions"
    for manifest in versions.glob("*.manifest"):
        manifest.write_bytes(b"garbage")
    result = run_job(instance, lance, raise_on_error=False)
    [mat] = [m for m in result.asset_materializations_for_node("lance_storage")
             if m.asset_key == dg.AssetKey("lance_storage")]
    assert mat.metadata["tables_failed"].value == 1
    assert "| edges |" in mat.metadata["report"].value and "cannot be opened" in mat.metadata["report"].value
    checks = checks_by_name(result)
    readable = checks["lance_storage:memory_tables_readable"]
    assert not readable.passed and readable.severity == dg.AssetCheckSeverity.ERROR
    assert "'edges'" in readable.description and "sessionlake memory rebuild" in readable.description
    assert checks["lance_storage:events_tables_readable"].passed
    fragments = checks["lance_storage:memory_small_fragments"]
    assert not fragments.passed and fragments.severity == dg.AssetCheckSeverity.ERROR
    assert sorted(p.read_bytes() for p in versions.glob("*.manifest")) == [b"garbage"] * 4, "recreated"


def test_a_table_whose_folder_is_gone_stops_the_sensor_and_fails_the_check(instance, lance):
    import shutil

    store = lance.store()
    small_writes(store, 3)
    shutil.rmtree(lm.table_dir(store, RECORDS))
    skipped = tick(instance, lance)
    assert not skipped.run_requests
    assert "'records'" in reason(skipped) and "is gone" in reason(skipped)
    assert "sessionlake memory rebuild" in reason(skipped)
    result = run_job(instance, lance, raise_on_error=False)
    readable = checks_by_name(result)["lance_storage:memory_tables_readable"]
    assert not readable.passed and readable.severity == dg.AssetCheckSeverity.ERROR
    assert "'records'" in readable.description and "sessionlake memory rebuild" in readable.description
    assert not lm.table_dir(store, RECORDS).exists(), "the lost table was recreated empty"


def test_a_cli_ingest_in_progress_blocks_maintenance(settings, tmp_path, monkeypatch):
    """`sessionlake ingest` runs its job in process with an empty asset selection: the guard goes by what
    the job writes. Once the command has created its run (after its last look at the warehouse before
    the run), this test takes the warehouse's lock, which holds the run inside its step."""
    import contextlib

    import duckdb

    from pipelines.defs.lance.sensors import blocking_reason
    from pipelines.instance.home import prepare_dagster_home

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    prepare_dagster_home(settings)
    with dg.DagsterInstance.get() as instance:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "ingest", "--all"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        held = blocked = None
        try:
            deadline = time.monotonic() + 120
            while held is None and time.monotonic() < deadline and proc.poll() is None:
                if instance.get_runs(limit=1):
                    with contextlib.suppress(duckdb.Error):
                        held = duckdb.connect(str(settings.state_path))
                time.sleep(0.02)
            while held is not None and time.monotonic() < deadline:
                runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
                if runs:
                    assert not runs[0].asset_selection  # what the guard used to read as "writes nothing"
                    blocked = blocking_reason(instance, all_defs.get_repository_def())
                    break
                time.sleep(0.2)
            assert blocked is not None and blocked[0] == "writers_active", (blocked, proc.poll())
            assert "ingest_sessions" in blocked[1]
        finally:
            if held is not None:
                held.close()
            out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
