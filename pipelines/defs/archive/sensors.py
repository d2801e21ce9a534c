"""The pack_gc_sensor: GC for a project once it piles up live packs."""

import hashlib

import dagster as dg

from pipelines.defs.archive.assets import STEP_NAME
from pipelines.defs.archive.jobs import pack_gc
from pipelines.defs.partitions import projects_partitions, projects_run_request
from pipelines.defs.resources import PackResource
from resources.state.store import is_lock_conflict


@dg.sensor(job=pack_gc, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 5 min: pack GC for a project once it has more than SESSIONLAKE_PACK_GC_LIVE_PACKS "
                       "live packs (default 8): one run for all of them, once per state of their packs.")
def pack_gc_sensor(context: dg.SensorEvaluationContext, packs: PackResource):
    """Start GC for every project with more than ``pack_gc_live_packs_threshold`` live packs
    (``SESSIONLAKE_PACK_GC_LIVE_PACKS``, default 8), in one run. The run key is a digest of those projects'
    live pack keys, so each state is requested once."""
    threshold = packs.settings().pack_gc_live_packs_threshold
    try:
        counts = packs.store(tick=True).pack_counts()
    except Exception as exc:
        if is_lock_conflict(exc):
            return dg.SkipReason("the warehouse is busy; the next tick retries")
        raise
    due = sorted(r for r, c in counts.items() if c["live"] > threshold)
    order = context.instance.get_dynamic_partitions(projects_partitions.name)
    new = sorted(set(due) - set(order))
    if not due:
        return dg.SensorResult(skip_reason=f"no project has more than {threshold} live packs")
    # one run for every due project; the run key is a digest of their live packs, so each state runs once
    digest = hashlib.blake2b("\n".join(f"{r}:{counts[r]['live_digest']}" for r in due).encode(),
                             digest_size=12).hexdigest()
    return dg.SensorResult(
        run_requests=[projects_run_request(STEP_NAME, [*order, *new], due, run_key=f"pack_gc:{digest}")],
        dynamic_partitions_requests=[projects_partitions.build_add_request(new)] if new else [],
    )
