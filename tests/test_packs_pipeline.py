"""Pack GC in Dagster with real resources on tmp dirs: the asset, its check, the sensor and the schedule."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import dagster as dg
import pytest

from pipelines.definitions import defs as all_defs
from pipelines.defs import resources as dagster_resources
from pipelines.defs.archive import definitions as pack_pipelines
from pipelines.defs.archive.assets import consolidated_packs
from pipelines.defs.archive.schedules import pack_gc_daily
from pipelines.defs.archive.sensors import pack_gc_sensor
from pipelines.defs.resources import PackResource
from tests.archive_support import grow, ingest, pack_store
from tests.conftest import SAMPLE_PROJECT
from tests.warehouse_holder import held_by_another_process

pytestmark = pytest.mark.integration

BIG = f"{SAMPLE_PROJECT}/d3ad4cdc-5657-435d-98fa-0035d53e383d.jsonl"


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("projects", [SAMPLE_PROJECT])
        yield instance


@pytest.fixture
def resources(settings):
    return {"packs": PackResource(home=str(settings.home), sessions_dir=str(settings.sessions_dir))}


def _ingests(settings, root, n: int):
    store = pack_store(settings)
    ingest(store, root)
    for i in range(n - 1):
        grow(root / BIG, tag=f"ingest-{i}")
        ingest(store, root)
    return store


REPOSITORY = all_defs.get_repository_def()


def sensor_tick(instance, resources):
    """One pack_gc_sensor tick as the daemon evaluates it (requests resolved against the job)."""
    context = dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), resources=resources,
                                      repository_def=REPOSITORY)
    return pack_gc_sensor.evaluate_tick(context)


def _materialize(instance, resources):
    return dg.materialize([consolidated_packs], partition_key=SAMPLE_PROJECT, resources=resources,
                          instance=instance, raise_on_error=False)


def test_consolidated_packs_gc_metadata_and_passing_check(settings, samples_root, instance, resources):
    store = _ingests(settings, samples_root, 3)
    objects = store.repo_stats(SAMPLE_PROJECT)["objects"]

    result = _materialize(instance, resources)

    assert result.success
    [mat] = result.asset_materializations_for_node("consolidated_packs")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert (meta["packs_before"], meta["packs_after"]) == (3, 1)
    assert meta["objects"] == objects and meta["dagster/row_count"] == 1
    assert meta["pack_bytes_after"] < meta["pack_bytes_before"] + 1024
    assert meta["compression_ratio"] > 3  # JSONL compresses well with zstd
    assert meta["dedup_ratio"] > 1.5  # 6 versions share the prefixes of the grown file
    assert meta["consolidated_key"] == store.live_packs(SAMPLE_PROJECT)[0]["key"]
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["index_rows"].value == objects


def test_check_fails_naming_an_altered_pack(settings, samples_root, instance, resources):
    store = _ingests(settings, samples_root, 1)
    [pack] = store.live_packs(SAMPLE_PROJECT)
    path = store.packs_dir / f"{pack['key'].split(':')[1]}.mpack"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))

    result = _materialize(instance, resources)

    assert result.success  # GC skipped the single pack; the check reports the damage
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    assert pack["key"] in check.metadata["details"].value


def test_sensor_requests_gc_above_threshold_once_per_state(settings, samples_root, instance, resources,
                                                           monkeypatch):
    monkeypatch.setenv("SESSIONLAKE_PACK_GC_LIVE_PACKS", "2")
    store = _ingests(settings, samples_root, 2)
    tick = lambda: sensor_tick(instance, resources)  # noqa: E731

    assert tick().skip_message is not None  # 2 live packs: not above the threshold

    grow(samples_root / BIG, tag="third")
    ingest(store, samples_root)
    first, again = tick(), tick()
    [request] = first.run_requests
    assert request.partition_key == SAMPLE_PROJECT
    assert [r.run_key for r in again.run_requests] == [request.run_key]  # same state, same request

    grow(samples_root / BIG, tag="fourth")
    ingest(store, samples_root)
    [changed] = tick().run_requests
    assert changed.run_key != request.run_key

    assert _materialize(instance, resources).success
    assert tick().skip_message is not None


def test_sensor_registers_a_project_it_does_not_know(settings, samples_root, resources, monkeypatch):
    monkeypatch.setenv("SESSIONLAKE_PACK_GC_LIVE_PACKS", "1")
    _ingests(settings, samples_root, 2)
    with dg.instance_for_test() as fresh:
        result = sensor_tick(fresh, resources)
    [add] = result.dynamic_partitions_requests
    assert list(add.partition_keys) == [SAMPLE_PROJECT]
    assert [r.partition_key for r in result.run_requests] == [SAMPLE_PROJECT]


def test_daily_schedule_requests_one_run_over_every_project_with_packs(settings, samples_root, instance,
                                                                       resources):
    when = datetime(2026, 1, 2, 4, 0, tzinfo=UTC)
    tick = lambda: pack_gc_daily.evaluate_tick(dg.build_schedule_context(  # noqa: E731
        instance=instance, resources=resources, scheduled_execution_time=when,
        repository_def=REPOSITORY))
    assert not tick().run_requests and "no project" in tick().skip_message  # nothing archived yet
    _ingests(settings, samples_root, 2)
    [request] = tick().run_requests
    assert request.partition_key == SAMPLE_PROJECT and request.run_key == "pack_gc:2026-01-02"
    assert _materialize(instance, resources).success
    # consolidated now, and still covered: its partition shows its state every day, never "missing"
    assert [r.run_key for r in tick().run_requests] == ["pack_gc:2026-01-02"]


def test_sensor_asks_for_one_run_over_every_due_project_each_with_its_own_numbers(settings, samples_root,
                                                                                  instance, resources,
                                                                                  monkeypatch):
    monkeypatch.setenv("SESSIONLAKE_PACK_GC_LIVE_PACKS", "1")
    other = "-Users-chip-dev-other"
    shutil.copytree(samples_root / SAMPLE_PROJECT, samples_root / other)
    instance.add_dynamic_partitions("projects", [other])
    store = _ingests(settings, samples_root, 2)
    grow(samples_root / BIG.replace(SAMPLE_PROJECT, other), tag="other")
    ingest(store, samples_root)  # 2 live packs in each project
    [request] = sensor_tick(instance, resources).run_requests
    job = dg.Definitions.merge(pack_pipelines.defs, dg.Definitions(resources=resources)).resolve_job_def("pack_gc")
    run = job.execute_in_process(instance=instance, tags=request.tags, run_config=request.run_config)
    assert run.success
    meta = {m.partition: {k: v.value for k, v in m.metadata.items()}
            for m in run.asset_materializations_for_node("consolidated_packs")}
    assert sorted(meta) == sorted([SAMPLE_PROJECT, other])
    for project in meta:
        assert (meta[project]["packs_before"], meta[project]["packs_after"]) == (2, 1)
        assert meta[project]["versions"] == store.repo_stats(project)["versions"]
    assert meta[other]["consolidated_key"] != meta[SAMPLE_PROJECT]["consolidated_key"]


def test_definitions_resolve_with_bound_resources(resources):
    defs = dg.Definitions.merge(pack_pipelines.defs, dg.Definitions(resources=resources))
    job = defs.resolve_job_def("pack_gc")
    assert job.partitions_def is not None
    assert {s.name for s in defs.resolve_all_job_defs()} >= {"pack_gc"}


def test_sensor_skips_while_another_process_holds_the_warehouse(settings, samples_root, instance, resources,
                                                                monkeypatch):
    _ingests(settings, samples_root, 1)
    monkeypatch.setattr(dagster_resources, "SENSOR_LOCK_WAIT_SEC", 0.3)
    with held_by_another_process(settings.state_path):
        result = sensor_tick(instance, resources)
    assert not result.run_requests and "busy" in result.skip_message
