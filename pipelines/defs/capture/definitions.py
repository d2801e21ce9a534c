"""The capture inbox in Dagster: the capture_records asset, the ingest_capture job and its sensor.

The sensor lists the inbox folder (no database, no Lance) and asks for one run per newest ULID, so
a tick that sees the same queue twice requests nothing new. A run drains everything pending at its
start, so envelopes a failed run left behind are picked up by the run the next capture triggers.

Merged into the code location by pipelines/definitions.py.
"""

import dagster as dg

from pipelines.defs.capture.assets import capture_records
from pipelines.defs.capture.checks import capture_inbox_nothing_set_aside
from pipelines.defs.capture.jobs import ingest_capture
from pipelines.defs.capture.sensors import capture_queue_sensor

defs = dg.Definitions(assets=[capture_records], asset_checks=[capture_inbox_nothing_set_aside],
                      jobs=[ingest_capture], sensors=[capture_queue_sensor])
