"""The capture_queue_sensor: one ingest_capture run per newest pending ULID."""

import json

import dagster as dg

from pipelines.defs.capture.assets import DEPTH_TAG
from pipelines.defs.capture.jobs import ingest_capture
from pipelines.defs.resources import CaptureQueueResource
from resources.capture.queue import ulid_or_none


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
