"""Lance storage health in Dagster: the lance_maintenance job, its health sensor, a nightly schedule, checks.

- ``lance_storage`` (asset, job ``lance_maintenance``): runs `optimize_lance_storage` and records the
  report as numbers per table (the UI plots versions, bytes, fragments and rows over time) plus a
  Markdown before/after table. A retention below ``settings.lance_retention_floor_sec`` fails the run
  unless ``force`` is set in the run config.
- ``lance_health_sensor``: the first tick in a new code-location process asks for a ``startup`` run;
  later ticks ask for a ``threshold`` run when a table has more prunable versions (older than the
  retention, so a run can actually remove them) or more small fragments than the settings allow, or a
  ``periodic`` run once ``settings.lance_optimize_interval_sec`` has passed since the last one. A wanted run is
  skipped (tick reason + ``lance_storage_optimize_skipped`` event) while a run that targets a Lance
  asset (`pipelines.defs.tags.LANCE_ASSETS`) is active, however it was launched (sensor, CLI, UI
  backfill), or another maintenance run is queued or active, and asked for again on the next tick.
  The cursor keeps the process id and the last request time.
- ``lance_maintenance_nightly``: the same run (phase ``periodic``) every night, with the same guards.
- Checks on ``memory_records`` (tables records, edges, provenance) and ``lance_events`` (table events): versions at
  or below the threshold (WARN above, ERROR at 10x), small fragments likewise, rows unchanged across the
  last optimize, and every table readable (ERROR naming the table when its folder exists but Lance
  cannot open it; the repair is ``sessionlake memory rebuild``). They run after ``lance_storage`` in the
  maintenance job.

Merged into the code location by pipelines/definitions.py.
"""

import dagster as dg

from pipelines.defs.lance.assets import lance_events, lance_storage, recall_provenance
from pipelines.defs.lance.checks import events_checks, memory_checks
from pipelines.defs.lance.jobs import lance_maintenance
from pipelines.defs.lance.schedules import lance_maintenance_nightly
from pipelines.defs.lance.sensors import lance_health_sensor
from resources.config.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    """The domain's definitions; the health sensor ticks at a twelfth of ``settings.lance_optimize_interval_sec``."""
    return dg.Definitions(
        assets=[lance_storage, lance_events, recall_provenance],
        asset_checks=[*memory_checks, *events_checks],
        jobs=[lance_maintenance],
        sensors=[lance_health_sensor(settings)],
        schedules=[lance_maintenance_nightly],
    )
