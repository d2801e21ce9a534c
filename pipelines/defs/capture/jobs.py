"""The ingest_capture job, in the `capture` run-queue lane with a higher priority than ingest runs."""

import dagster as dg

from pipelines.defs.capture.assets import capture_records
from pipelines.defs.tags import PRIORITY_TAG, QUEUE_TAG

ingest_capture = dg.define_asset_job(
    "ingest_capture", selection=[capture_records], tags={QUEUE_TAG: "capture", PRIORITY_TAG: "10"},
    description="Drain the capture inbox into Lance records (tier capture). Its own pool, run-queue lane and a "
                "higher priority, so a capture never waits behind session ingestion.",
)
