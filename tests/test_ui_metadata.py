"""What the Dagster UI shows, checked through a real instance: each partition's domain numbers against the
warehouse, a no-op run that leaves them as they are, the whole-warehouse totals, code versions derived from
the counting rules, and lineage for every table the code writes."""

import json
import os
import time

import dagster as dg
import duckdb
import pytest
from dagster._core.definitions.data_version import StaleCauseCategory
from dagster._utils.test.data_versions import get_stale_status_resolver

from pipelines.definitions import defs
from pipelines.defs.partitions import projects_partitions
from pipelines.defs.resources import NO_PREFETCH, LanceResource, PackResource, StateResource
from pipelines.defs.sessions.assets import CODE_VERSIONS, USAGE_TOTALS, ingest_projects, usage_totals
from pipelines.defs.sessions.sensors import partition_run_request
from resources.memory.lance import LanceStore
from resources.usage.pricing import RULES_VERSION
from tests.conftest import SAMPLE_PROJECT
from tests.ingest_support import run_ingest

pytestmark = pytest.mark.integration

PROCESSOR_ASSETS = ("usage_messages", "memory_records", "session_archive")


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def _add_project(root, name: str, responses: int) -> None:
    (root / name).mkdir()
    lines = [json.dumps({
        "type": "assistant", "uuid": f"{name}-{n}", "sessionId": f"{name}-s", "requestId": f"req-{name}-{n}",
        "timestamp": f"2025-06-10T10:0{n}:00.000Z",
        "message": {"id": f"msg-{name}-{n}", "model": "claude-sonnet-4-20250514", "role": "assistant",
                    "content": [{"type": "text", "text": f"answer {n} in {name}"}],
                    "usage": {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 5,
                              "cache_read_input_tokens": 1000}},
    }) for n in range(responses)]
    (root / name / "s0.jsonl").write_text("\n".join(lines) + "\n")


def _run(instance, projects: list[str]) -> dg.ExecuteInProcessResult:
    result = run_ingest(instance, projects)
    assert result.success
    return result


def _latest_record(instance, asset: str, partition: str | None = None):
    records = instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None), limit=1).records
    return records[0]


def _latest(instance, asset: str, partition: str | None = None) -> dict:
    materialization = _latest_record(instance, asset, partition).asset_materialization
    return {k: v.value for k, v in materialization.metadata.items()}


def test_each_partition_carries_what_it_holds_and_a_no_op_run_leaves_it(instance, settings):
    root = settings.sessions_dir
    _add_project(root, "small", responses=3)
    projects = [SAMPLE_PROJECT, "small"]
    instance.add_dynamic_partitions(projects_partitions.name, sorted(projects))
    _run(instance, projects)
    with duckdb.connect(str(settings.state_path), read_only=True) as conn:
        expected = {p: conn.execute(
            "SELECT count(*), sum(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens"
            " + extra_output_tokens), sum(coalesce(cost_usd, computed_cost_usd, 0)),"
            " count(DISTINCT session_id) FROM usage_messages WHERE project = ?", [p]).fetchone() for p in projects}
    for project in projects:
        usage = _latest(instance, "usage_messages", project)
        responses, tokens, cost, sessions = expected[project]
        assert (usage["responses"], usage["dagster/row_count"], usage["total_tokens"], usage["sessions"]) == (
            responses, responses, tokens, sessions)
        assert usage["cost_usd"] == pytest.approx(cost, abs=1e-6) and usage["cost_usd"] > 0
        assert usage["first_activity"] <= usage["last_activity"]
        memory = _latest(instance, "memory_records", project)
        records = LanceStore.from_settings(settings).open_table("records").count_rows(f"project = '{project}'")
        assert memory["records"] == memory["dagster/row_count"] == records > 0
        archive = _latest(instance, "session_archive", project)
        assert archive["versions"] == archive["sessions"] == len(list((root / project).rglob("*.jsonl")))
        assert archive["pack_bytes"] > 0 and archive["compression_ratio"] >= 1
    totals = _latest(instance, USAGE_TOTALS)
    assert totals["responses"] == sum(e[0] for e in expected.values()) and totals["projects"] == 2
    assert totals["cost_usd"] == pytest.approx(sum(e[2] for e in expected.values()), abs=1e-6)
    assert "| `small` |" not in totals["week_by_project"], "2025 usage is not this week's"
    assert "(no usage this week)" in totals["week_by_model"]
    alone = dg.materialize([usage_totals], instance=instance, resources={"state": StateResource()},
                           selection=[USAGE_TOTALS])  # the UI's "Materialize" on the asset: no external badge
    [event] = alone.get_asset_materialization_events()
    assert event.materialization.metadata["responses"].value == totals["responses"]

    before = {(a, p): _latest_record(instance, a, p).storage_id
              for a in PROCESSOR_ASSETS for p in projects}
    again = _run(instance, projects)  # nothing changed on disk
    assert [e for e in again.get_asset_materialization_events()] == [], "a no-op run materializes nothing"
    observed = {(e.asset_key.to_user_string(), e.partition) for e in again.get_asset_observation_events()}
    assert observed >= set(before), "each partition the run looked at is observed, with the run's counters"
    after = {(a, p): _latest_record(instance, a, p).storage_id
             for a in PROCESSOR_ASSETS for p in projects}
    assert after == before
    assert _latest(instance, "usage_messages", "small")["responses"] == 3


def test_code_versions_come_from_the_rules_and_a_rules_change_marks_partitions_changed(instance, settings):
    assert CODE_VERSIONS["usage_messages"].startswith(f"rules-{RULES_VERSION}.genai-prices-")
    instance.add_dynamic_partitions(projects_partitions.name, [SAMPLE_PROJECT])
    _run(instance, [SAMPLE_PROJECT])
    event = _latest_record(instance, "usage_messages", SAMPLE_PROJECT)
    assert event.asset_materialization.tags["dagster/code_version"] == CODE_VERSIONS["usage_messages"]

    def code_causes(assets: dg.AssetsDefinition) -> list:  # what the UI's "code version changed" cause reads
        causes = get_stale_status_resolver(instance, [assets]).get_stale_causes(dg.AssetKey("usage_messages"),
                                                                                SAMPLE_PROJECT)
        return [c for c in causes if c.category == StaleCauseCategory.CODE]

    assert code_causes(ingest_projects) == []
    bumped = ingest_projects.map_asset_specs(
        lambda spec: spec.replace_attributes(code_version="rules-999") if spec.key.path == ["usage_messages"]
        else spec)
    [cause] = code_causes(bumped)
    assert cause.reason == "has a new code version"


def test_each_partition_records_the_session_files_it_was_computed_from(instance, settings):
    """The UI's "unsynced" status compares a processor partition with its own session_files partition: in
    sync after a run, behind once session_files changed without it, in sync again after the next run."""
    instance.add_dynamic_partitions(projects_partitions.name, [SAMPLE_PROJECT])
    _run(instance, [SAMPLE_PROJECT])

    def causes() -> list[str]:
        resolver = get_stale_status_resolver(instance, [ingest_projects])
        return [c.reason for c in resolver.get_stale_causes(dg.AssetKey("usage_messages"), SAMPLE_PROJECT)]

    assert causes() == []
    files = _latest_record(instance, "session_files", SAMPLE_PROJECT).asset_materialization.tags
    assert len(files["dagster/data_version"]) == 24  # the digest the session sensor compares
    path = next(settings.sessions_dir.rglob(f"{SAMPLE_PROJECT}/*.jsonl"))
    with open(path, "a") as f:
        f.write('{"type": "summary", "summary": "later"}\n')
    request = partition_run_request(instance.get_dynamic_partitions(projects_partitions.name), [SAMPLE_PROJECT])
    only_files = defs.resolve_job_def("ingest_sessions").execute_in_process(
        instance=instance, run_config=request.run_config, tags={"dagster/partition": SAMPLE_PROJECT},
        asset_selection=[dg.AssetKey("session_files")])
    assert only_files.success
    assert causes() == ["has a new dependency materialization"]
    _run(instance, [SAMPLE_PROJECT])
    assert causes() == []


def test_every_table_the_code_writes_is_an_asset_with_its_lineage():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"session_files", "usage_messages", "memory_records", "session_archive", USAGE_TOTALS,
            "consolidated_packs", "capture_records", "team_sessions", "lance_storage", "lance_events",
            "recall_provenance"} <= keys
    parents = {k: {p.to_user_string() for p in graph.get(dg.AssetKey(k)).parent_keys} for k in keys}
    assert parents[USAGE_TOTALS] == {"usage_messages", "team_sessions"}
    assert graph.get(dg.AssetKey(USAGE_TOTALS)).is_materializable
    assert parents["consolidated_packs"] == {"session_archive"}
    assert parents["lance_storage"] >= {"memory_records", "capture_records", "team_sessions", "recall_provenance"}
    assert parents["lance_events"] >= {"memory_records", "lance_storage"}
    assert graph.get(dg.AssetKey("consolidated_packs")).backfill_policy == dg.BackfillPolicy.single_run()


def _freshness_tick(instance):
    context = dg.build_sensor_context(instance=instance, resources={"state": StateResource()},
                                      repository_def=defs.get_repository_def())
    return defs.get_repository_def().get_sensor_def("session_freshness_sensor").evaluate_tick(context)


def test_freshness_check_fails_for_a_stale_partition_without_a_run(instance, settings):
    instance.add_dynamic_partitions(projects_partitions.name, [SAMPLE_PROJECT])
    _run(instance, [SAMPLE_PROJECT])
    fresh = {e.asset_key.to_user_string(): e for e in _freshness_tick(instance).asset_events}
    assert set(fresh) == set(PROCESSOR_ASSETS) and all(e.passed for e in fresh.values())

    path = next(settings.sessions_dir.rglob("fed8ce56*.jsonl"))
    with open(path, "a") as f:
        f.write('{"type": "summary", "summary": "written while no daemon ran"}\n')
    long_ago = time.time() - 3600  # changed an hour ago, many sensor intervals, and never ingested
    os.utime(path, (long_ago, long_ago))
    stale = {e.asset_key.to_user_string(): e for e in _freshness_tick(instance).asset_events}
    for asset in PROCESSOR_ASSETS:
        assert not stale[asset].passed and stale[asset].severity == dg.AssetCheckSeverity.WARN
        assert stale[asset].metadata["files_behind"].value == 1
        assert f"`{SAMPLE_PROJECT}`" in stale[asset].metadata["behind"].value

    _run(instance, [SAMPLE_PROJECT])  # the next ingest catches up
    assert all(e.passed for e in _freshness_tick(instance).asset_events)


def test_a_ui_backfill_evaluates_every_check_it_plans(instance, settings):
    """Materializing the session assets as the UI does (checks included): no check is left skipped."""
    instance.add_dynamic_partitions(projects_partitions.name, [SAMPLE_PROJECT])
    result = dg.materialize([ingest_projects], instance=instance, partition_key=SAMPLE_PROJECT,
                            resources={"state": StateResource(), "lance": LanceResource(), "packs": PackResource(),
                                       "prefetch": NO_PREFETCH})
    assert result.success
    checks = {(c.asset_key.to_user_string(), c.check_name) for c in result.get_asset_check_evaluations()}
    assert checks == {(a, name) for a in PROCESSOR_ASSETS for name in ("files_ingested", "files_fresh")}


def test_an_instance_without_the_shipped_settings_is_named_by_the_session_sensor(settings):
    """Plain `dagster dev` on a new DAGSTER_HOME: no lanes, no pool limit, no run monitoring; every tick says so."""
    repo = defs.get_repository_def()
    sensor = repo.get_sensor_def("session_files_sensor")
    with dg.instance_for_test() as bare:
        def tick(cursor=None):
            return sensor.evaluate_tick(dg.build_sensor_context(
                instance=bare, instance_ref=bare.get_ref(), cursor=cursor, resources={"state": StateResource()},
                repository_def=repo))

        idle = tick(tick().cursor)
    assert "lacks the sessionlake/queue run-queue lanes" in idle.skip_message
    assert "run_monitoring" in idle.skip_message and "dagster.yaml" in idle.skip_message


def test_the_shipped_instance_has_every_setting_the_sensor_looks_for(tmp_path):
    from pipelines.instance.home import install_instance_yaml, missing_settings

    install_instance_yaml(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as shipped:
        assert missing_settings(shipped) == []
