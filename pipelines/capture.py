"""The capture inbox in Dagster: the capture_records asset, the ingest_capture job and its sensor.

The sensor lists the inbox folder (no database, no Lance) and asks for one run per newest ULID, so
a tick that sees the same queue twice requests nothing new. A run drains everything pending at its
start, so envelopes a failed run left behind are picked up by the run the next capture triggers.
"""

import json

import dagster as dg

from pipelines.tags import POOL_CAPTURE, PRIORITY_TAG, QUEUE_TAG
from resources.capture.queue import DEFAULT_BATCH_SIZE, ulid_or_none
from resources.configurable import CaptureQueueResource, LanceResource

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


@dg.asset_check(asset=capture_records, description="Nothing waits in overflow/ or corrupt/ for a person to act.")
def capture_inbox_nothing_set_aside(capture_queue: CaptureQueueResource) -> dg.AssetCheckResult:
    queue = capture_queue.queue()
    overflow = len(queue.list_overflow())
    corrupt = sum(1 for p in queue.corrupt_dir.glob("pending-*.json")) if queue.corrupt_dir.exists() else 0
    advice = []
    if overflow:
        advice.append(f"{overflow} envelope(s) in {queue.overflow_dir} (the queue was full): once drained, "
                      "run `sessionlake capture --requeue-overflow`")
    if corrupt:
        advice.append(f"{corrupt} unreadable envelope(s) in {queue.corrupt_dir}; see {queue.corrupt_audit_log}")
    return dg.AssetCheckResult(
        passed=not advice, severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(advice) or "nothing set aside",
        metadata={"overflow_envelopes": dg.MetadataValue.int(overflow),
                  "corrupt_envelopes": dg.MetadataValue.int(corrupt)},
    )


ingest_capture = dg.define_asset_job(
    "ingest_capture", selection=[capture_records], tags={QUEUE_TAG: "capture", PRIORITY_TAG: "10"},
    description="Drain the capture inbox into Lance records (tier capture). Its own pool, run-queue lane and a "
                "higher priority, so a capture never waits behind session ingestion.",
)


@dg.sensor(job=ingest_capture, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 15 s: an ingest_capture run when the capture inbox has pending records (run key = "
                       "the newest ULID, so the same queue is requested once).")
def capture_queue_sensor(context: dg.SensorEvaluationContext, capture_queue: CaptureQueueResource) -> dg.SensorResult:
    """Request an ingest_capture run when envelopes are pending; run_key = newest ULID; depth in the cursor."""
    pending = capture_queue.queue().list_pending()
    depth = len(pending)
    # The newest real ULID; a foreign pending-*.json alone still asks for a run, whose drain sets it aside.
    ulids = [u for path in pending if (u := ulid_or_none(path))]
    newest = ulids[-1] if ulids else pending[-1].name if pending else None
    previous = json.loads(context.cursor) if context.cursor else {}
    cursor = json.dumps({"depth": depth, "newest_ulid": newest or previous.get("newest_ulid")})
    if not pending:
        return dg.SensorResult(cursor=cursor, skip_reason="capture queue depth 0: nothing pending")
    context.log.info(f"capture queue depth {depth}, newest {newest}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"capture:{newest}", tags={DEPTH_TAG: str(depth)})],
        cursor=cursor,
    )


defs = dg.Definitions(assets=[capture_records], asset_checks=[capture_inbox_nothing_set_aside],
                      jobs=[ingest_capture], sensors=[capture_queue_sensor])
