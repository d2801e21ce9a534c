"""The capture inbox in Dagster: sensor on a real instance, the asset and job on real Lance and folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pipelines.definitions import defs as all_defs
from pipelines.defs.capture.assets import DEPTH_TAG, capture_records
from pipelines.defs.capture.definitions import defs
from pipelines.defs.capture.jobs import ingest_capture
from pipelines.defs.capture.sensors import capture_queue_sensor
from pipelines.defs.resources import CaptureQueueResource, LanceResource
from pipelines.defs.tags import POOL_CAPTURE, PRIORITY_TAG, QUEUE_TAG
from resources.capture.drain import drain_to_lance
from resources.capture.queue import CaptureQueue
from resources.memory.lance import LanceStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def queue(home) -> CaptureQueue:
    return CaptureQueue(home / "capture")


@pytest.fixture
def resources(home) -> dict:
    return {"capture_queue": CaptureQueueResource(home=str(home)), "lance": LanceResource(home=str(home))}


def _tick(instance, resources, cursor=None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                                      repository_def=all_defs.get_repository_def())
    return capture_queue_sensor.evaluate_tick(context)


def test_sensor_survives_a_foreign_pending_file_and_the_run_sets_it_aside(queue, resources):
    ulid = queue.append({"text": "real"})
    foreign = queue.dir / f"pending-{'z' * 26}.json"  # sorts after every ULID
    foreign.write_text("{}")
    with dg.instance_for_test() as instance:
        [request] = _tick(instance, resources).run_requests
        assert request.run_key == f"capture:{ulid}"
        foreign_only = queue.dir / f"pending-{'y' * 26}.json"
        assert drain_to_lance(queue, LanceStore(queue.dir.parent / "lance")).records == 1
        foreign_only.write_text("{}")
        [alone] = _tick(instance, resources).run_requests
        assert alone.run_key == f"capture:{foreign_only.name}"
    assert sorted(p.name for p in queue.corrupt_dir.iterdir()) == [foreign.name]


def test_sensor_requests_one_run_per_newest_ulid_and_reports_depth(queue, resources):
    with dg.instance_for_test() as instance:
        empty = _tick(instance, resources)
        assert not empty.run_requests and "depth 0" in empty.skip_message
        assert json.loads(empty.cursor)["depth"] == 0

        ulids = [queue.append({"text": f"note {i}"}) for i in range(3)]
        result = _tick(instance, resources, cursor=empty.cursor)
        [request] = result.run_requests
        assert request.run_key == f"capture:{ulids[-1]}" and request.tags[DEPTH_TAG] == "3"
        assert json.loads(result.cursor) == {"depth": 3, "newest_ulid": ulids[-1]}

        again = _tick(instance, resources, cursor=result.cursor)
        assert [r.run_key for r in again.run_requests] == [request.run_key]  # same key: Dagster runs it once

        newer = queue.append({"text": "one more"})
        assert _tick(instance, resources, cursor=again.cursor).run_requests[0].run_key == f"capture:{newer}"


def test_materialize_drains_into_lance_with_ulid_ids(queue, resources, home):
    ulids = [queue.append({"text": f"captured thought {i}", "session_id": "s1", "role": "user",
                           "project": "-w-shop"}) for i in range(5)]
    with dg.instance_for_test() as instance:
        result = dg.materialize([capture_records], resources=resources, instance=instance)
    assert result.success
    metadata = result.asset_materializations_for_node("capture_records")[0].metadata
    assert metadata["records_ingested"].value == 5 and metadata["lance_commits"].value == 1
    assert metadata["queue_depth_after"].value == 0
    rows = LanceStore(home / "lance").get_many(ulids)
    assert sorted(rows) == sorted(ulids)
    row = rows[ulids[2]]
    assert row["text"] == "captured thought 2" and row["tier"] == "capture"
    assert row["session_id"] == "s1" and row["role"] == "user" and row["project"] == "-w-shop"
    assert row["timestamp"] is not None
    assert queue.pending_count() == 0 and not list(queue.dir.glob("pending-*"))


def test_job_has_its_own_lane_and_pool_and_batches_commits(queue, resources, home):
    assert ingest_capture.tags[QUEUE_TAG] == "capture" and int(ingest_capture.tags[PRIORITY_TAG]) > 0
    assert capture_records.op.pool == POOL_CAPTURE
    for i in range(7):
        queue.append({"text": f"batch me {i}"})
    job = dg.Definitions.merge(defs, dg.Definitions(resources=resources)).resolve_job_def("ingest_capture")
    store = LanceStore(home / "lance")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            instance=instance, run_config={"ops": {"capture_records": {"config": {"batch_size": 3}}}})
    assert result.success
    assert store.count("records") == 7
    [materialization] = result.asset_materializations_for_node("capture_records")
    assert materialization.metadata["lance_commits"].value == 3


def test_redrain_after_a_crash_between_commit_and_delete_adds_no_duplicates(queue, home, tmp_path):
    for text in ("alpha", "beta", "gamma"):
        queue.append({"text": text})
    saved = tmp_path / "saved"
    shutil.copytree(queue.dir, saved)  # the files as they were when the run died after committing
    store = LanceStore(home / "lance")
    assert drain_to_lance(queue, store).records == 3
    for path in saved.glob("pending-*.json"):
        shutil.copy(path, queue.dir / path.name)
    again = drain_to_lance(queue, store)
    assert again.records == 3 and store.count("records") == 3
    assert queue.pending_count() == 0


def test_records_without_text_are_kept_as_json(queue, home):
    ulid = queue.append({"event": "deploy", "service": "checkout", "timestamp": "not a time"})
    store = LanceStore(home / "lance")
    drain_to_lance(queue, store)
    row = store.get(ulid)
    assert json.loads(row["text"]) == {"event": "deploy", "service": "checkout", "timestamp": "not a time"}
    assert row["tier"] == "capture" and row["timestamp"] is not None  # falls back to appended_at


def test_asset_check_warns_about_overflow(home, resources):
    queue = CaptureQueue(home / "capture", max_size=2)
    for i in range(4):
        queue.append({"text": str(i)})
    with dg.instance_for_test() as instance:
        result = dg.materialize([capture_records, *defs.asset_checks], resources=resources, instance=instance)
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["overflow_envelopes"].value == 2 and "--requeue-overflow" in check.description
    assert queue.requeue_overflow() == 2
    with dg.instance_for_test() as instance:
        result = dg.materialize([capture_records, *defs.asset_checks], resources=resources, instance=instance)
    assert result.get_asset_check_evaluations()[0].passed
    assert LanceStore(home / "lance").count("records") == 4


def _cli(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "SESSIONLAKE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], cwd=REPO, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_end_to_end_capture_sensor_run_recall(home, resources):
    prompt = "the flux capacitor needs 1.21 gigawatts — Привет"
    done = _cli(home, "capture", "--from-hook", stdin=json.dumps({
        "session_id": "e2e-session", "hook_event_name": "UserPromptSubmit",
        "transcript_path": "/h/.claude/projects/-w-shop/e2e-session.jsonl", "prompt": prompt}))
    assert done.returncode == 0, done.stderr
    ulid = done.stderr.strip()
    with dg.instance_for_test() as instance:
        [request] = _tick(instance, resources).run_requests
        assert request.run_key == f"capture:{ulid}"
        job = dg.Definitions.merge(defs, dg.Definitions(resources=resources)).resolve_job_def("ingest_capture")
        run = job.execute_in_process(instance=instance, tags={**request.tags, "dagster/run_key": request.run_key})
        assert run.success
        assert not _tick(instance, resources).run_requests  # drained: nothing more to ask for
    found = _cli(home, "recall", "flux capacitor gigawatts", "--project=-w-shop", "--json")
    assert found.returncode == 0, found.stderr
    [hit] = json.loads(found.stdout)
    assert hit["id"] == ulid and hit["text"] == prompt
    assert hit["tier"] == "capture" and hit["role"] == "user" and hit["session"] == "e2e-session"
    text = _cli(home, "recall", "capacitor")
    assert "1.21 gigawatts" in text.stdout
