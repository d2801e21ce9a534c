"""The team_catchup_daily schedule (off by default): ingests every manifest not ingested yet."""

import dagster as dg

from pipelines.defs.team.jobs import ingest_team

team_catchup_daily = dg.ScheduleDefinition(
    name="team_catchup_daily", job=ingest_team, cron_schedule="30 4 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="04:30 UTC: ingest every manifest in the team bucket not ingested yet (late ones included).")
