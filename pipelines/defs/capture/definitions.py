"""The capture domain's definitions, merged into the code location by pipelines/definitions.py."""

import dagster as dg

from pipelines.defs.capture.assets import capture_records
from pipelines.defs.capture.checks import capture_inbox_nothing_set_aside
from pipelines.defs.capture.jobs import ingest_capture
from pipelines.defs.capture.sensors import capture_queue_sensor

defs = dg.Definitions(assets=[capture_records], asset_checks=[capture_inbox_nothing_set_aside],
                      jobs=[ingest_capture], sensors=[capture_queue_sensor])
