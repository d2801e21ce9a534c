"""Dagster ingestion: the session sensor on a real instance, and the assets materialized for real."""

import json
import os
import subprocess
import sys
import time

import dagster as dg
import pytest

from pipelines.definitions import defs
from pipelines.partitions import projects_partitions
from pipelines.sessions import (
    BACKFILL_ABOVE_PROJECTS,
    project_fingerprints,
    session_files,
    session_files_sensor,
    usage_messages,
)
from resources.configurable import StateResource
from tests.conftest import SAMPLE_PROJECT


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def _tick(instance, state, cursor=None):
    repository = defs.get_repository_def()
    context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                      resources={"state": state}, repository_def=repository)
    return session_files_sensor(context), context


def _apply(instance, result):
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_sensor_registers_projects_requests_changes_once_and_skips_when_nothing_changed(instance, settings):
    state = StateResource()
    result, _ = _tick(instance, state)
    assert [r.partition_keys for r in result.dynamic_partitions_requests] == [[SAMPLE_PROJECT]]
    assert [(r.partition_key, r.run_key.split(":")[0]) for r in result.run_requests] == [(SAMPLE_PROJECT,
                                                                                         SAMPLE_PROJECT)]
    _apply(instance, result)

    again, _ = _tick(instance, state, result.cursor)
    assert again.run_requests == [] and "no changes" in again.skip_reason.skip_message

    path = next(settings.sessions_dir.rglob("fed8ce56*.jsonl"))
    with open(path, "a") as f:
        f.write('{"type": "summary", "summary": "later"}\n')
    changed, _ = _tick(instance, state, again.cursor)
    assert [r.partition_key for r in changed.run_requests] == [SAMPLE_PROJECT]
    assert changed.run_requests[0].run_key != result.run_requests[0].run_key


def test_sensor_needs_no_database_even_while_a_run_holds_it(instance, settings):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('x', flush=True); "
                               "time.sleep(30)", str(settings.state_path)],
        stdout=subprocess.PIPE, text=True)
    settings.state_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        assert holder.stdout.readline().strip() == "x"
        result, _ = _tick(instance, StateResource())
        assert len(result.run_requests) == 1
    finally:
        holder.kill()


def test_first_sight_of_many_projects_becomes_one_backfill(instance, settings):
    for i in range(BACKFILL_ABOVE_PROJECTS + 5):
        project = settings.sessions_dir / f"proj-{i:03d}"
        project.mkdir()
        (project / "s.jsonl").write_text('{"type": "summary", "summary": "x"}\n')
    result, _ = _tick(instance, StateResource())
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.requires_backfill_daemon()
    partitions = {apk.partition_key for apk in request.asset_graph_subset.iterate_asset_partitions()}
    assert len(partitions) == BACKFILL_ABOVE_PROJECTS + 6


def test_new_partitions_are_capped_per_tick(instance, settings, monkeypatch):
    monkeypatch.setenv("SESSIONLAKE_SENSOR_MAX_NEW_PARTITIONS", "3")
    for i in range(5):
        (settings.sessions_dir / f"p{i}").mkdir()
        (settings.sessions_dir / f"p{i}" / "s.jsonl").write_text("{}\n")
    result, _ = _tick(instance, StateResource())
    assert len(result.dynamic_partitions_requests[0].partition_keys) == 3
    _apply(instance, result)
    cursor = json.loads(result.cursor)
    assert len(cursor) == 3  # the other projects are picked up next tick
    second, _ = _tick(instance, StateResource(), result.cursor)
    assert len(second.dynamic_partitions_requests[0].partition_keys) == 3


def test_no_change_tick_over_many_files_is_fast(tmp_path):
    root = tmp_path / "tree"
    for p in range(20):
        d = root / f"proj-{p}"
        d.mkdir(parents=True)
        for s in range(500):
            (d / f"{s}.jsonl").write_bytes(b"{}\n")
    started = time.perf_counter()
    fingerprints = project_fingerprints(root)
    elapsed = time.perf_counter() - started
    assert len(fingerprints) == 20
    assert elapsed < 5  # 10,000 files; the benchmark holds the real target (100,000 files under 1 s)


def test_materialize_ingests_the_partition_and_reports_processor_stats(instance, settings):
    instance.add_dynamic_partitions(projects_partitions.name, [SAMPLE_PROJECT])
    resources = {"state": StateResource()}
    result = dg.materialize([session_files, usage_messages], instance=instance, resources=resources,
                            partition_key=SAMPLE_PROJECT)
    assert result.success
    meta = {e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert meta["session_files"]["files"].value == 4 and meta["session_files"]["new_files"].value == 4
    assert meta["usage_messages"]["processed"].value == 4
    assert meta["usage_messages"]["items_extracted"].value == 90
    again = dg.materialize([session_files, usage_messages], instance=instance, resources=resources,
                           partition_key=SAMPLE_PROJECT)
    meta = {e.asset_key.to_user_string(): e.materialization.metadata for e in again.get_asset_materialization_events()}
    assert meta["usage_messages"]["processed"].value == 0 and meta["usage_messages"]["skipped"].value == 4
    os.remove(next(settings.sessions_dir.rglob("ff71dbed*.jsonl")))
    gone = dg.materialize([session_files], instance=instance, resources=resources, partition_key=SAMPLE_PROJECT)
    assert gone.get_asset_materialization_events()[0].materialization.metadata["missing_files"].value == 1
