"""The pack_gc_daily schedule: GC for every project with more than one live pack or tombstones to sweep."""

import dagster as dg

from pipelines.defs.archive.jobs import pack_gc
from pipelines.defs.archive.sensors import store_for_tick
from pipelines.defs.partitions import projects_partitions
from pipelines.defs.resources import PackResource
from resources.state.store import is_lock_conflict


@dg.schedule(job=pack_gc, cron_schedule="0 4 * * *", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="04:00 UTC daily: pack GC for every project with more than one live pack or "
                         "tombstones past the grace period.")
def pack_gc_daily(context: dg.ScheduleEvaluationContext, packs: PackResource):
    """Every day, GC each project with more than one live pack or with tombstones left to sweep."""
    try:
        counts = store_for_tick(packs).pack_counts()
    except Exception as exc:
        if is_lock_conflict(exc):
            return dg.SkipReason("the warehouse is busy; tomorrow's tick will catch up")
        raise
    known = set(context.instance.get_dynamic_partitions(projects_partitions.name))
    due = sorted(r for r, c in counts.items() if r in known and (c["live"] > 1 or c["tombstoned"]))
    day = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "now"
    if not due:
        return dg.SkipReason(f"no project of {len(counts)} needs GC")
    return [dg.RunRequest(run_key=f"pack_gc:{r}:{day}", partition_key=r) for r in due]
