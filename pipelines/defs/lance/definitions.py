"""The lance domain's definitions, merged into the code location by pipelines/definitions.py."""

import dagster as dg

from pipelines.defs.lance.assets import lance_events, lance_storage
from pipelines.defs.lance.checks import events_checks, memory_checks
from pipelines.defs.lance.jobs import lance_maintenance
from pipelines.defs.lance.schedules import lance_maintenance_nightly
from pipelines.defs.lance.sensors import lance_health_sensor

defs = dg.Definitions(
    assets=[lance_storage, lance_events],
    asset_checks=[*memory_checks, *events_checks],
    jobs=[lance_maintenance],
    sensors=[lance_health_sensor],
    schedules=[lance_maintenance_nightly],
)
