"""The capture_records asset: drains the capture inbox into the Lance records table."""

import dagster as dg

from pipelines.defs.resources import CaptureQueueResource, LanceResource
from pipelines.defs.tags import POOL_CAPTURE
from resources.capture.queue import DEFAULT_BATCH_SIZE

DEPTH_TAG = "sessionlake/capture-depth"
"""Run tag: how many envelopes were pending when the sensor asked for the run."""


class CaptureIngestConfig(dg.Config):
    batch_size: int = DEFAULT_BATCH_SIZE
    """Envelopes per Lance commit."""


@dg.asset(pool=POOL_CAPTURE, group_name="capture", kinds={"lancedb"})
def capture_records(
    context: dg.AssetExecutionContext, config: CaptureIngestConfig,
    capture_queue: CaptureQueueResource, lance: LanceResource,
) -> dg.MaterializeResult:
    """Lance ``records`` rows (tier ``capture``) drained from the capture inbox; id = ULID, one commit per batch."""
    from resources.capture.drain import drain_to_lance

    queue = capture_queue.queue()
    store = lance.store()
    stats = drain_to_lance(queue, store, batch_size=config.batch_size)
    context.log.info(f"ingested {stats.records} captured record(s) in {stats.batches} batch(es)")
    return dg.MaterializeResult(metadata={
        "records_ingested": dg.MetadataValue.int(stats.records),
        "lance_commits": dg.MetadataValue.int(stats.batches),
        "records_per_sec": dg.MetadataValue.float(round(stats.records_per_sec, 1)),
        "queue_depth_after": dg.MetadataValue.int(queue.pending_count()),
        "records_table_version": dg.MetadataValue.int(store.version("records")),
    })
