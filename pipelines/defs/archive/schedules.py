"""The pack_gc_daily schedule: one GC run over every project with packs, so each partition shows its state."""

import dagster as dg

from pipelines.defs.archive.assets import STEP_NAME
from pipelines.defs.archive.jobs import pack_gc
from pipelines.defs.partitions import projects_partitions, projects_run_request
from pipelines.defs.resources import PackResource
from resources.state.store import is_lock_conflict


@dg.schedule(job=pack_gc, cron_schedule="0 4 * * *", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="04:00 UTC daily: one pack GC run over every project with packs: consolidates "
                         "those with more than one live pack, sweeps tombstones past the grace period, verifies "
                         "every pack, and materializes each project.")
def pack_gc_daily(context: dg.ScheduleEvaluationContext, packs: PackResource):
    """Every day, one run over every known project with packs: GC leaves a consolidated project as it is
    but still materializes it with its numbers, so no partition shows as missing once it has a pack."""
    try:
        counts = packs.store(tick=True).pack_counts()
    except Exception as exc:
        if is_lock_conflict(exc):
            return dg.SkipReason("the warehouse is busy; tomorrow's tick will catch up")
        raise
    order = context.instance.get_dynamic_partitions(projects_partitions.name)
    due = sorted(r for r in counts if r in set(order) and (counts[r]["live"] or counts[r]["tombstoned"]))
    day = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "now"
    if not due:
        return dg.SkipReason(f"no project of {len(counts)} has packs")
    return projects_run_request(STEP_NAME, order, due, run_key=f"pack_gc:{day}")
