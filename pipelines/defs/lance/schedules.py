"""The lance_maintenance_nightly schedule: a periodic optimize, with the sensor's guards."""

import time

import dagster as dg

from pipelines.defs.lance.assets import NIGHTLY_CRON
from pipelines.defs.lance.jobs import lance_maintenance
from pipelines.defs.lance.sensors import blocking_reason, maintenance_run_request, record_skip, retention_refused
from pipelines.defs.resources import LanceResource


@dg.schedule(job=lance_maintenance, cron_schedule=NIGHTLY_CRON, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="03:30 UTC nightly: a periodic Lance optimize with the configured retention, unless a "
                         "run is writing Lance tables.")
def lance_maintenance_nightly(context: dg.ScheduleEvaluationContext, lance: LanceResource):
    """Every night: a ``periodic`` optimize with the configured retention, unless writers are active."""
    settings = lance.settings()
    refused = retention_refused(settings)
    if refused:
        return dg.SkipReason(refused)
    blocked = blocking_reason(context.instance, context.repository_def)
    if blocked:
        return dg.SkipReason(record_skip(lance.store(), "periodic", *blocked))
    return maintenance_run_request("periodic", time.time(), "nightly schedule", settings)
