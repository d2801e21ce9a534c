"""The ingest step's per-partition events go to the event log as one batch per asset
(pipelines/defs/sessions/event_batch.py): the Dagster internals it stands on are there, and a run that
yields them batched records what the same events yielded one by one record."""

import importlib

import dagster as dg
import pytest

import pipelines.defs.sessions.event_batch as event_batch
from pipelines.instance.home import install_instance_yaml

pytestmark = pytest.mark.unit

PARTS = dg.StaticPartitionsDefinition([f"p{i}" for i in range(5)])


def _events(keys):
    return [dg.AssetMaterialization("a", partition=key, metadata={"n": i}, tags={"dagster/data_version": key})
            if i % 2 else dg.AssetObservation("a", partition=key, metadata={"n": i}) for i, key in enumerate(keys)]


@dg.asset(partitions_def=PARTS)
def a(context: dg.AssetExecutionContext):
    if context.run.tags.get("batched") == "yes":
        yield from event_batch.batched(context, _events(context.partition_keys))
    else:
        yield from _events(context.partition_keys)
    yield dg.MaterializeResult()


def test_the_dagster_internals_it_stands_on_are_there():
    from dagster.version import __version__

    from pipelines.instance.event_log_storage import DAGSTER_MINOR

    seen = {}

    @dg.asset
    def probe(context: dg.AssetExecutionContext):
        seen["context"] = context.op_execution_context

    assert dg.materialize([probe]).success
    owners = {"DagsterEvent": event_batch.DagsterEvent, "OpExecutionContext instance": seen["context"]}
    missing = [f"{where}.{name}" for where, names in event_batch.DAGSTER_INTERNALS.items() for name in names
               if not hasattr(owners.get(where) or importlib.import_module(where), name)]
    assert not missing, f"Dagster {__version__} lacks {', '.join(missing)}: see pipelines/defs/sessions/event_batch.py"
    assert __version__.rsplit(".", 1)[0] == DAGSTER_MINOR


@pytest.mark.parametrize("batch_size", ["0", "1000"])
def test_batched_events_are_recorded_as_the_same_events_yielded_one_by_one(tmp_path, monkeypatch, batch_size):
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch_size)
    install_instance_yaml(tmp_path)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        recorded = {}
        for batched in ("no", "yes"):
            result = dg.materialize([a], instance=instance, tags={"batched": batched,
                                                                  "dagster/asset_partition_range_start": "p0",
                                                                  "dagster/asset_partition_range_end": "p4"})
            assert result.success
            logs = [e.dagster_event for e in instance.all_logs(result.run_id) if e.is_dagster_event
                    and e.dagster_event.event_type_value in ("ASSET_MATERIALIZATION", "ASSET_OBSERVATION")]
            assert len(logs) == 5 + 5  # the step's 5 events, then the output's materialization of each partition
            recorded[batched] = [(e.event_type_value, e.partition, e.event_specific_data) for e in logs[:5]]
        assert recorded["yes"] == recorded["no"]
        latest = instance.get_latest_materialization_event(dg.AssetKey("a"))
        assert latest.run_id == result.run_id
