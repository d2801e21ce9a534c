"""Failed files are retried without a change to their project: markers, backoff, and the sensor."""

import json

import dagster as dg
import pytest

import resources.ingest.plan as plan
from pipelines.definitions import defs
from pipelines.defs.partitions import projects_partitions
from pipelines.defs.resources import NO_PREFETCH, LanceResource, PackResource, StateResource
from pipelines.defs.sessions.assets import STEP_NAME, ingest_projects
from resources.ingest.retry_marks import MAX_ATTEMPTS, RETRY_BASE_SEC, due_retries, record_failures
from tests.conftest import SAMPLE_PROJECT

pytestmark = pytest.mark.integration


def test_backoff_doubles_per_attempt_and_gives_up_after_the_last(tmp_path):
    retry = tmp_path / "retry"
    record_failures(retry, "usage", "proj", ["proj/a.jsonl"], now=0)
    assert due_retries(retry, now=RETRY_BASE_SEC - 1) == {}
    first = due_retries(retry, now=RETRY_BASE_SEC)
    assert list(first) == ["proj"]
    record_failures(retry, "usage", "proj", ["proj/a.jsonl"], now=1000)  # the retry failed too
    assert due_retries(retry, now=1000 + RETRY_BASE_SEC) == {}
    second = due_retries(retry, now=1000 + 2 * RETRY_BASE_SEC)
    assert list(second) == ["proj"] and second != first  # a new run key for the new attempt
    for _ in range(MAX_ATTEMPTS):
        record_failures(retry, "usage", "proj", ["proj/a.jsonl"], now=2000)
    assert due_retries(retry, now=10**12) == {}  # given up: waits for the project's next change
    assert "proj/a.jsonl" in next(retry.glob("*.json")).read_text()  # still there for a person to read
    record_failures(retry, "usage", "proj", [], now=3000)
    assert list(retry.glob("*.json")) == []


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(projects_partitions.name, [SAMPLE_PROJECT])
        yield instance


def test_unreadable_file_leaves_a_marker_the_sensor_retries(instance, settings, monkeypatch):
    real = plan.compute_file_hash
    locked = next(settings.sessions_dir.rglob("ba79134d*.jsonl"))

    def unreadable(path, size=None):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, size)

    monkeypatch.setattr(plan, "compute_file_hash", unreadable)
    resources = {"state": StateResource(), "lance": LanceResource(), "packs": PackResource(),
                 "prefetch": NO_PREFETCH}

    def ingest_usage():
        return dg.materialize([ingest_projects], selection=["session_files", "usage_messages"], instance=instance,
                              resources=resources, partition_key=SAMPLE_PROJECT)

    result = ingest_usage()
    [usage] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "usage_messages"]
    assert usage.materialization.metadata["files_failed"].value == 1
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "files_ingested"]
    assert not check.passed and "ba79134d" in check.metadata["failed_files"].value
    assert len(list(settings.retry_dir.glob("*.json"))) == 1

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), cursor=cursor,
                                          resources=resources, repository_def=defs.get_repository_def())
        return defs.get_repository_def().get_sensor_def("session_files_sensor").evaluate_tick(context)

    seen = tick(None)  # first sight: the ordinary change request
    quiet = tick(seen.cursor)
    assert quiet.run_requests == []  # the failure is fresh: not due yet
    marker = next(settings.retry_dir.glob("*.json"))
    body = json.loads(marker.read_text())
    marker.write_text(json.dumps({**body, "failed_at": body["failed_at"] - RETRY_BASE_SEC - 1}))
    due = tick(quiet.cursor)
    [request] = due.run_requests
    assert request.partition_key == SAMPLE_PROJECT
    assert request.run_config["ops"][STEP_NAME]["config"]["projects"] == [SAMPLE_PROJECT]

    monkeypatch.setattr(plan, "compute_file_hash", real)  # the file became readable
    assert ingest_usage().get_asset_check_evaluations()[0].passed
    assert list(settings.retry_dir.glob("*.json")) == []
    assert tick(due.cursor).run_requests == []
