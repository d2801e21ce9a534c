"""Pack GC in Dagster: the consolidated_packs asset (per project), the pack_gc job, a daily schedule,
a sensor that starts GC once a project piles up live packs, and the archive-verified asset check.

The asset runs in the ingest pool (`pipelines.defs.tags.POOL_INGEST`), the pool of the step that writes
session_archive, so archive writes and GC never run at once. The logic lives in
`resources.archive.packs` / `resources.archive.gc`; this module only orchestrates and reports.

Merged into the code location by pipelines/definitions.py.
"""

import dagster as dg

from pipelines.defs.archive.assets import consolidated_packs
from pipelines.defs.archive.jobs import pack_gc
from pipelines.defs.archive.schedules import pack_gc_daily
from pipelines.defs.archive.sensors import pack_gc_sensor

defs = dg.Definitions(assets=[consolidated_packs], jobs=[pack_gc], schedules=[pack_gc_daily],
                      sensors=[pack_gc_sensor])
