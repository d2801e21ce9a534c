"""Session ingestion in Dagster: the four session assets, the one step that materializes them, the
job, and the sensor.

The assets are partitioned by project (one dynamic partition per project of every agent found:
Claude Code's project folders as they are, other agents' projects as ``<agent>:<project>``, see
resources/sources/). One multi-asset
step, `ingest_projects`, walks the selected projects once and runs every selected processor in one
pass (one planning connection, one Lance commit per table, one pack per project), and the job runs
it in process: a run is one process and one step, however many projects it covers. Backfills use
`BackfillPolicy.single_run`, so a backfill over every partition is one run.

Each project gets its own materialization of each asset, carrying that project's own numbers, and
only the projects the run was asked for are materialized (a run over a partition range that the
sensor asked for names its projects in the run config).

The sensor never opens the warehouse: it keeps one digest of (path, size, mtime_ns) per project in its own
small database (its cursor names the state's generation), saved once the run asked for that project
succeeded, registers new projects as partitions itself (before anything else, so a failing request can
never hold registration back), and asks for one run per tick covering every changed project or every
project of a failed run.

Merged into the code location by pipelines/definitions.py.
"""

import dagster as dg

from pipelines.defs.sessions.assets import ingest_projects, usage_totals
from pipelines.defs.sessions.jobs import ingest_sessions
from pipelines.defs.sessions.sensors import ingest_runs_succeed, session_files_sensor, session_freshness_sensor
from resources.config.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    """The domain's definitions; the sensor ticks at ``settings.sensor_interval_sec``."""
    return dg.Definitions(assets=[ingest_projects, usage_totals], asset_checks=[ingest_runs_succeed],
                          jobs=[ingest_sessions],
                          sensors=[session_files_sensor(settings), session_freshness_sensor(settings)])
