"""The team domain's definitions, merged into the code location by pipelines/definitions.py."""

import dagster as dg

from pipelines.defs.team.assets import team_sessions
from pipelines.defs.team.jobs import ingest_team
from pipelines.defs.team.schedules import team_catchup_daily
from pipelines.defs.team.sensors import team_manifest_sensor

defs = dg.Definitions(assets=[team_sessions], jobs=[ingest_team], sensors=[team_manifest_sensor],
                      schedules=[team_catchup_daily])
