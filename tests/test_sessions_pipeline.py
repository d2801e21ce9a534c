"""Dagster ingestion: the session sensor through Dagster's own tick evaluation on a real instance, and
the ingest step materialized for real, one run over several projects."""

import json
import os
import shutil
import subprocess
import sys
import time

import dagster as dg
import duckdb
import pytest

from pipelines.definitions import defs
from pipelines.defs.partitions import projects_partitions
from pipelines.defs.resources import StateResource
from pipelines.defs.sessions.assets import JOB_NAME, STEP_NAME
from pipelines.defs.sessions.sensors import SENSOR_NAME
from resources.ingest.session_files import project_fingerprints, walk_sessions
from resources.state.sensor_state import KEEP_GENERATIONS, load_state, sensor_store
from tests.conftest import SAMPLE_PROJECT
from tests.ingest_support import run_ingest

pytestmark = pytest.mark.integration


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def _tick(instance, cursor=None):
    """One tick as the daemon evaluates it: run requests resolved and validated against the job."""
    context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                      resources={"state": StateResource()},
                                      repository_def=defs.get_repository_def())
    return defs.get_repository_def().get_sensor_def("session_files_sensor").evaluate_tick(context)


def _state(settings, cursor):
    """The sensor state ``cursor`` names, read back from the sensors' database."""
    with sensor_store(settings).connect() as conn:
        state, found = load_state(conn, SENSOR_NAME, cursor)
    assert found == "stored", cursor
    return state


def _projects_of(request: dg.RunRequest) -> list[str]:
    return request.run_config["ops"][STEP_NAME]["config"]["projects"]


def _add_project(root, name: str, sessions: int = 1, responses: int = 3) -> None:
    """A project of ``sessions`` files with ``responses`` API responses each, ids unique to it."""
    (root / name).mkdir()
    for i in range(sessions):
        lines = [json.dumps({
            "type": "assistant", "uuid": f"{name}-{i}-{n}", "sessionId": f"{name}-{i}",
            "requestId": f"req-{name}-{i}-{n}",
            "timestamp": "2025-06-10T10:00:00.000Z",
            "message": {"id": f"msg-{name}-{i}-{n}", "model": "claude-sonnet-4-20250514", "role": "assistant",
                        "content": [{"type": "text", "text": f"answer {n} in {name}"}],
                        "usage": {"input_tokens": 10 + n, "output_tokens": 20, "cache_creation_input_tokens": 0,
                                  "cache_read_input_tokens": 0}},
        }) for n in range(responses)]
        (root / name / f"s{i}.jsonl").write_text("\n".join(lines) + "\n")


def test_sensor_registers_projects_requests_changes_once_and_skips_when_nothing_changed(instance, settings):
    first = _tick(instance)
    assert instance.get_dynamic_partitions(projects_partitions.name) == [SAMPLE_PROJECT]
    [request] = first.run_requests
    assert request.partition_key == SAMPLE_PROJECT and _projects_of(request) == [SAMPLE_PROJECT]

    again = _tick(instance, first.cursor)
    assert again.run_requests == [] and "no changes" in again.skip_message

    path = next(settings.sessions_dir.rglob("fed8ce56*.jsonl"))
    with open(path, "a") as f:
        f.write('{"type": "summary", "summary": "later"}\n')
    [changed] = _tick(instance, again.cursor).run_requests
    assert changed.partition_key == SAMPLE_PROJECT and changed.run_key != request.run_key


def test_sensor_needs_no_database_even_while_a_run_holds_it(instance, settings):
    settings.state_path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('x', flush=True); "
                               "time.sleep(30)", str(settings.state_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "x"
        assert len(_tick(instance).run_requests) == 1
    finally:
        holder.kill()


def test_many_changed_projects_become_one_run_with_the_exact_set(instance, settings):
    for i in range(25):
        _add_project(settings.sessions_dir, f"proj-{i:03d}")
    first = _tick(instance)
    [request] = first.run_requests  # the daemon path resolved it: no CheckError, no backfill
    assert not request.requires_backfill_daemon()
    assert len(_projects_of(request)) == 26
    assert len(instance.get_dynamic_partitions(projects_partitions.name)) == 26
    # later, changes to 3 projects scattered over the partition order: one run, only those 3
    for name in ("proj-002", "proj-013", "proj-024"):
        with open(settings.sessions_dir / name / "s0.jsonl", "a") as f:
            f.write('{"type": "summary", "summary": "more"}\n')
    [later] = _tick(instance, first.cursor).run_requests
    assert _projects_of(later) == ["proj-002", "proj-013", "proj-024"]
    assert (later.tags["dagster/asset_partition_range_start"], later.tags["dagster/asset_partition_range_end"]) == (
        "proj-002", "proj-024")


def test_changes_wait_for_a_queued_run_then_go_into_the_next_one(instance, settings):
    first = _tick(instance)
    job = defs.resolve_job_def(JOB_NAME)
    queued = instance.create_run_for_job(job, status=dg.DagsterRunStatus.NOT_STARTED)
    _add_project(settings.sessions_dir, "late-project")
    path = next(settings.sessions_dir.rglob("fed8ce56*.jsonl"))
    with open(path, "a") as f:
        f.write('{"type": "summary", "summary": "later"}\n')
    waiting = _tick(instance, first.cursor)
    assert waiting.run_requests == [] and queued.run_id[:8] in waiting.skip_message
    assert "late-project" in instance.get_dynamic_partitions(projects_partitions.name), "registered anyway"
    still = _tick(instance, waiting.cursor)
    assert still.run_requests == [], "no backlog: nothing more is queued while one run waits"
    instance.handle_run_event(queued.run_id, dg.DagsterEvent(
        event_type_value="PIPELINE_START", job_name=JOB_NAME, message="started"))
    [request] = _tick(instance, still.cursor).run_requests
    assert _projects_of(request) == sorted([SAMPLE_PROJECT, "late-project"]), "coalesced, nothing dropped"


def test_new_partitions_are_capped_per_tick_and_registered_before_any_request(instance, settings, monkeypatch):
    monkeypatch.setenv("SESSIONLAKE_SENSOR_MAX_NEW_PARTITIONS", "3")
    for i in range(5):
        _add_project(settings.sessions_dir, f"p{i}")
    first = _tick(instance)
    assert len(instance.get_dynamic_partitions(projects_partitions.name)) == 3
    assert first.dynamic_partitions_requests == []  # already registered by the tick itself
    [asked] = _state(settings, first.cursor).requested.values()  # saved as ingested once that run succeeds
    assert len(asked["projects"]) == 3
    second = _tick(instance, first.cursor)
    assert len(instance.get_dynamic_partitions(projects_partitions.name)) == 6
    assert len(_projects_of(second.run_requests[0])) == 3


def test_a_damaged_cursor_or_a_vanished_root_never_wedges_the_sensor(instance, settings):
    result = _tick(instance, cursor="{not json")
    assert len(result.run_requests) == 1
    shutil.rmtree(settings.sessions_dir)
    gone = _tick(instance, result.cursor)
    assert gone.run_requests == [] and "does not exist" in gone.skip_message


def test_the_cursor_is_short_and_the_state_is_in_the_sensors_database(instance, settings):
    for i in range(3):
        _add_project(settings.sessions_dir, f"big-{i}", sessions=30)
    first = _tick(instance)
    generation, digest = first.cursor.split(":")
    assert generation.isdigit() and len(first.cursor) < 24, first.cursor
    [asked] = _state(settings, first.cursor).requested.values()  # until the run succeeds; then they move to digests
    assert len(asked["projects"]) == 4 and all(len(fp) == 24 for fp in asked["projects"].values())
    with duckdb.connect(str(settings.sensor_state_path), read_only=True) as conn:  # a person can query it
        assert conn.execute("SELECT count(DISTINCT project) FROM sensor_requests").fetchone() == (4,)
    assert not settings.state_path.exists(), "the tick never opens the warehouse"
    assert _tick(instance, first.cursor).cursor == first.cursor, "nothing changed: no new generation"


def test_a_tick_dagster_does_not_keep_leaves_the_state_of_the_kept_cursor(instance, settings):
    """A "Test sensor" evaluation in the UI writes a generation, but the daemon's cursor never names it."""
    first = _tick(instance)
    [request] = first.run_requests
    _tick(instance, cursor=None)  # e.g. an evaluation whose cursor Dagster threw away
    state = _state(settings, first.cursor)
    assert list(state.requested) == [request.run_key]


def test_old_generations_are_pruned_and_a_reset_cursor_asks_for_everything(instance, settings):
    cursor = None
    for i in range(KEEP_GENERATIONS + 3):
        _add_project(settings.sessions_dir, f"gen-{i}")
        cursor = _tick(instance, cursor).cursor
    with duckdb.connect(str(settings.sensor_state_path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM sensor_generations").fetchone() == (KEEP_GENERATIONS,)
    [everything] = _tick(instance, cursor=None).run_requests
    assert len(_projects_of(everything)) == KEEP_GENERATIONS + 4


def test_a_cursor_of_the_earlier_format_keeps_its_digests(instance, settings):
    """An instance upgraded with a cursor that held the whole state as JSON asks for nothing again."""
    current = project_fingerprints(walk_sessions(settings.sessions_dir))
    legacy = json.dumps({"digests": current, "requested": {}, "gave_up": {}})
    result = _tick(instance, cursor=legacy)
    assert result.run_requests == [] and "no changes" in result.skip_message
    assert _state(settings, result.cursor).digests == current


def test_no_change_tick_over_many_files_is_fast(tmp_path):
    root = tmp_path / "tree"
    for p in range(20):
        d = root / f"proj-{p}"
        d.mkdir(parents=True)
        for s in range(500):
            (d / f"{s}.jsonl").write_bytes(b"{}\n")
    started = time.perf_counter()
    fingerprints = project_fingerprints(walk_sessions(root))
    elapsed = time.perf_counter() - started
    assert len(fingerprints) == 20
    assert elapsed < 5  # 10,000 files; the benchmark holds the real target (100,000 files under 1 s)


def _metadata(result) -> dict[tuple[str, str], dict]:
    """Per (asset, partition), the metadata of the run's materializations of the session assets."""
    return {(e.asset_key.to_user_string(), e.partition): {k: v.value for k, v in e.materialization.metadata.items()}
            for e in result.get_asset_materialization_events() if e.partition is not None}


def test_one_run_over_projects_of_different_sizes_reports_each_projects_own_numbers(instance, settings):
    root = settings.sessions_dir
    _add_project(root, "small", sessions=1, responses=2)
    _add_project(root, "bystander", sessions=2)
    instance.add_dynamic_partitions(projects_partitions.name, sorted(os.listdir(root)))
    result = run_ingest(instance, [SAMPLE_PROJECT, "small"])  # one run, "bystander" sits between them
    assert result.success
    meta = _metadata(result)
    assert {p for _, p in meta} == {SAMPLE_PROJECT, "small"}, "only the projects asked for are materialized"
    with duckdb.connect(str(settings.state_path), read_only=True) as conn:
        responses = dict(conn.execute("SELECT project, count(*) FROM usage_messages GROUP BY project").fetchall())
    for project in (SAMPLE_PROJECT, "small"):
        files = list((root / project).rglob("*.jsonl"))
        on_disk = sum(f.stat().st_size for f in files)
        assert meta[("session_files", project)]["files"] == len(files)
        assert meta[("session_files", project)]["bytes_on_disk"] == on_disk
        usage = meta[("usage_messages", project)]
        assert (usage["files_scanned"], usage["files_processed"], usage["bytes_read"]) == (len(files), len(files),
                                                                                           on_disk)
        assert usage["responses_extracted"] == responses[project]
        assert meta[("session_archive", project)]["versions_extracted"] == len(files)
    assert meta[("usage_messages", SAMPLE_PROJECT)]["files_scanned"] == 4
    checks = {c.asset_key.to_user_string(): c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"usage_messages", "memory_records", "session_archive"}
    assert all(c.passed for c in checks.values())
    steps = {e.step_key for e in result.all_events if e.step_key}
    assert steps == {STEP_NAME}, "one step per run: the table-wide Lance checks belong to maintenance"


def test_a_queued_ui_backfill_of_the_session_assets_also_holds_changes_for_the_nextrun_ingest(instance, settings):
    first = _tick(instance)
    job = defs.resolve_implicit_global_asset_job_def()
    backfill_run = instance.create_run_for_job(job, status=dg.DagsterRunStatus.NOT_STARTED,
                                               asset_selection=frozenset({dg.AssetKey("usage_messages")}))
    capture_run = instance.create_run_for_job(job, status=dg.DagsterRunStatus.NOT_STARTED,
                                              asset_selection=frozenset({dg.AssetKey("capture_records")}))
    path = next(settings.sessions_dir.rglob("fed8ce56*.jsonl"))
    with open(path, "a") as f:
        f.write('{"type": "summary", "summary": "later"}\n')
    waiting = _tick(instance, first.cursor)
    assert waiting.run_requests == [] and backfill_run.run_id[:8] in waiting.skip_message
    instance.report_run_canceled(backfill_run)
    [request] = _tick(instance, waiting.cursor).run_requests  # the queued capture run holds nothing back
    assert instance.get_run_by_id(capture_run.run_id).status == dg.DagsterRunStatus.NOT_STARTED
    assert _projects_of(request) == [SAMPLE_PROJECT]


def _launch(instance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Run a sensor's request as the daemon would: its tags (with the run key) and its run config."""
    tags = {**request.tags, "dagster/run_key": request.run_key}
    if request.partition_key:
        tags["dagster/partition"] = request.partition_key
    return defs.resolve_job_def(JOB_NAME).execute_in_process(instance=instance, tags=tags,
                                                            run_config=request.run_config, raise_on_error=False)


def test_a_failed_runs_projects_are_asked_for_again_then_backed_off_then_given_up(instance, settings, monkeypatch):
    from pipelines.defs.sessions import sensors

    _add_project(settings.sessions_dir, "-home-dev-second")
    settings.state_path.mkdir(parents=True)  # a folder where the warehouse goes: every run fails
    first = _tick(instance)
    [request] = first.run_requests
    projects = _projects_of(request)
    assert len(projects) == 2
    assert not _launch(instance, request).success
    again = _tick(instance, first.cursor)  # the failed run's projects, on the very next tick
    [retry] = again.run_requests
    assert _projects_of(retry) == projects and retry.run_key != request.run_key
    assert not _launch(instance, retry).success
    waiting = _tick(instance, again.cursor)  # a second failure in a row: back-off
    assert waiting.run_requests == [] and "back-off" in waiting.skip_message

    monkeypatch.setattr(sensors, "BACKOFF_BASE_SEC", 0.0)
    cursor = waiting.cursor
    for _ in range(sensors.MAX_FAILED_RUNS - 2):
        result = _tick(instance, cursor)
        [request] = result.run_requests
        assert not _launch(instance, request).success
        cursor = result.cursor
    gave_up = _tick(instance, cursor)  # not a loop: a failed check instead
    assert gave_up.run_requests == []
    [check] = gave_up.asset_events
    assert not check.passed and check.check_name == "ingest_runs_succeed"
    assert all(p in check.description for p in projects)
    assert _tick(instance, gave_up.cursor).run_requests == []

    settings.state_path.rmdir()  # fixed; one project's files change: it alone is asked for again
    _add_project(settings.sessions_dir, "-home-dev-third")
    with (settings.sessions_dir / "-home-dev-second" / "s0.jsonl").open("a") as f:
        f.write("\n")
    changed = _tick(instance, gave_up.cursor)
    [request] = changed.run_requests
    assert set(_projects_of(request)) == {"-home-dev-second", "-home-dev-third"}
    assert _launch(instance, request).success
    done = _tick(instance, changed.cursor)
    [cleared] = done.asset_events  # the second project succeeded; the first still fails
    assert not cleared.passed and "-home-dev-second" not in cleared.description
    assert done.run_requests == []
