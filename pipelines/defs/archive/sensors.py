"""The pack_gc_sensor: GC for a project once it piles up live packs."""

import dagster as dg

from pipelines.defs.archive.jobs import pack_gc
from pipelines.defs.partitions import projects_partitions
from pipelines.defs.resources import PackResource
from resources.state.store import is_lock_conflict

SENSOR_LOCK_WAIT_SEC = 15.0
"""A sensor tick waits at most this long for the warehouse, then skips (the next tick retries)."""


def store_for_tick(packs: PackResource):
    store = packs.store()
    store.state.lock_wait_sec = SENSOR_LOCK_WAIT_SEC
    return store


@dg.sensor(job=pack_gc, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 5 min: pack GC for a project once it has more than SESSIONLAKE_PACK_GC_LIVE_PACKS "
                       "live packs (default 8), one run per state of its packs.")
def pack_gc_sensor(context: dg.SensorEvaluationContext, packs: PackResource):
    """Start GC for a project once it has more than ``pack_gc_live_packs_threshold`` live packs
    (``SESSIONLAKE_PACK_GC_LIVE_PACKS``, default 8). The run key is the digest of the project's live
    pack keys, so each state of a project is requested once."""
    threshold = packs.settings().pack_gc_live_packs_threshold
    try:
        counts = store_for_tick(packs).pack_counts()
    except Exception as exc:
        if is_lock_conflict(exc):
            return dg.SkipReason("the warehouse is busy; the next tick retries")
        raise
    due = sorted(r for r, c in counts.items() if c["live"] > threshold)
    known = set(context.instance.get_dynamic_partitions(projects_partitions.name))
    new = [r for r in due if r not in known]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"pack_gc:{r}:{counts[r]['live_digest']}", partition_key=r)
                      for r in due],
        dynamic_partitions_requests=[projects_partitions.build_add_request(new)] if new else [],
        skip_reason=None if due else f"no project has more than {threshold} live packs",
    )
