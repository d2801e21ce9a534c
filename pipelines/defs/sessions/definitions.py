"""The sessions domain's definitions, merged into the code location by pipelines/definitions.py."""

import dagster as dg

from pipelines.defs.sessions.assets import ingest_projects
from pipelines.defs.sessions.jobs import ingest_sessions
from pipelines.defs.sessions.sensors import session_files_sensor

defs = dg.Definitions(assets=[ingest_projects], jobs=[ingest_sessions], sensors=[session_files_sensor])
