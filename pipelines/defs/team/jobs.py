"""The ingest_team job: team_sessions, in the `ingest` run-queue lane."""

import dagster as dg

from pipelines.defs.tags import QUEUE_TAG
from pipelines.defs.team.assets import team_sessions

ingest_team = dg.define_asset_job(
    "ingest_team", selection=[team_sessions], tags={QUEUE_TAG: "ingest"},
    description="Ingest the sessions that machines pushed to the team bucket (usage and memory, attributed).")
