"""The archive domain's definitions, merged into the code location by pipelines/definitions.py."""

import dagster as dg

from pipelines.defs.archive.assets import consolidated_packs
from pipelines.defs.archive.jobs import pack_gc
from pipelines.defs.archive.schedules import pack_gc_daily
from pipelines.defs.archive.sensors import pack_gc_sensor

defs = dg.Definitions(assets=[consolidated_packs], jobs=[pack_gc], schedules=[pack_gc_daily],
                      sensors=[pack_gc_sensor])
