"""The capture inbox check: nothing waits in overflow/ or corrupt/ for a person to act."""

import dagster as dg

from pipelines.defs.capture.assets import capture_records
from pipelines.defs.resources import CaptureQueueResource


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
