"""One asset's per-partition events, handed to the event log as one batch.

An ingest step reports each project partition with an event of its own (its numbers, its data version):
about 400 materializations in a first ingest of 100 projects. Yielded one by one, each is a write and a
commit of its own. `batched` yields them as Dagster yields the per-partition events of a partitioned
output: tagged as one batch, which the instance hands to the event log storage at once (when
``DAGSTER_EVENT_BATCH_SIZE`` is set, as `pipelines.instance.event_log_storage` sets it), and which the
pooled SQLite event log writes in one transaction. The events, their order and their content are those
the step would have yielded one by one; with batching off, Dagster stores them one by one.

It stands on Dagster internals (the step context behind the op context, the batch metadata of an event),
named in `DAGSTER_INTERNALS` and checked by tests/test_ingest_event_batch.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventBatchMetadata, generate_event_batch_id

DAGSTER_INTERNALS = {
    "dagster._core.events": ("DagsterEvent", "DagsterEventBatchMetadata", "generate_event_batch_id"),
    "DagsterEvent": ("asset_materialization", "asset_observation"),
    "OpExecutionContext instance": ("_step_execution_context",),
}
"""Every private name of Dagster's this module relies on, by where it lives."""


def batched(context: dg.AssetExecutionContext,
            events: Iterable[dg.AssetMaterialization | dg.AssetObservation]) -> Iterator[DagsterEvent]:
    """``events`` as the step's events of one batch, for the asset's body to yield (all of them, without
    other events in between: the batch is stored when its last event is yielded)."""
    events = list(events)
    step = context.op_execution_context._step_execution_context
    batch_id = generate_event_batch_id()
    for i, event in enumerate(events):
        metadata = DagsterEventBatchMetadata(batch_id, is_end=i == len(events) - 1)
        if isinstance(event, dg.AssetMaterialization):
            yield DagsterEvent.asset_materialization(step, event, metadata)
        else:
            yield DagsterEvent.asset_observation(step, event, metadata)
