"""The central deployment of a team: the team_sessions asset, the ingest_team job, its sensor and schedule.

Machines push packs and manifests to the team bucket (``sessionlake push``); this deployment runs
with ``SESSIONLAKE_STORAGE_URI`` equal to ``SESSIONLAKE_TEAM_URI``, so the pushed packs are its own
archive's packs, read in place. It needs nothing but the bucket and its own DuckDB.

The sensor lists the manifests named in the last `LOOKBACK_SEC` (names start with their UTC time),
remembers in its cursor which of them it has asked for, and requests one run for every tick that
finds new ones (run key: a digest of their names; at most `MAX_MANIFESTS_PER_RUN`). A manifest that
lands later than the lookback after its own time (a clock far behind, a push that took longer) is
picked up by the daily schedule, whose run lists every manifest and ingests those not ingested yet.

Merged into the code location by pipelines/definitions.py.
"""

import dagster as dg

from pipelines.defs.team.assets import team_sessions
from pipelines.defs.team.jobs import ingest_team
from pipelines.defs.team.schedules import team_catchup_daily
from pipelines.defs.team.sensors import team_manifest_sensor

defs = dg.Definitions(assets=[team_sessions], jobs=[ingest_team], sensors=[team_manifest_sensor],
                      schedules=[team_catchup_daily])
