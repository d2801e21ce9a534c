"""Pack GC in Dagster: the consolidated_packs asset (per project), the pack_gc job, a daily schedule,
a sensor that starts GC once a project piles up live packs, and the archive-verified asset check.

The asset runs in the ingest pool (`pipelines.tags.POOL_INGEST`), the pool of the step that writes
session_archive, so archive writes and GC never run at once. The logic lives in
`resources.archive.packs` / `resources.archive.gc`; this module only orchestrates and reports.
"""

import dagster as dg

from pipelines.partitions import projects_partitions
from pipelines.tags import POOL_INGEST
from resources.configurable import PackResource
from resources.state import is_lock_conflict

SENSOR_LOCK_WAIT_SEC = 15.0
"""A sensor tick waits at most this long for the warehouse, then skips (the next tick retries)."""

VERIFIED_CHECK = "archive_verified"
_COUNTS = ("live_packs", "pack_bytes", "objects", "object_bytes", "stored_bytes", "versions", "version_bytes")


def _ratio(num: int, den: int) -> float:
    return round(num / den, 3) if den else 1.0


def _totals(stats: list[dict]) -> dict:
    total = {k: sum(s[k] for s in stats) for k in _COUNTS}
    total["dedup_ratio"] = _ratio(total["version_bytes"], total["object_bytes"])
    total["compression_ratio"] = _ratio(total["object_bytes"], total["stored_bytes"])
    return total


def _problems_md(problems: list[dict]) -> str:
    return "| repo | pack | problem |\n|---|---|---|\n" + "\n".join(
        f"| {p['repo']} | `{p['pack']}` | {p['problem']} |" for p in problems[:50]
    )


@dg.asset(
    partitions_def=projects_partitions,
    deps=[dg.AssetKey("session_archive")],
    pool=POOL_INGEST,
    group_name="archive",
    check_specs=[dg.AssetCheckSpec(VERIFIED_CHECK, asset="consolidated_packs",
                                   description="Every index row resolves and no pack fails its hash.")],
)
def consolidated_packs(context: dg.AssetExecutionContext, packs: PackResource):
    """One live pack per project: GC consolidates the project's packs, then sweeps what is past grace.

    Metadata: packs, bytes and objects before and after, the dedup ratio (bytes of every archived
    version / bytes of unique objects), the compression ratio (object bytes / stored bytes), and
    projects_skipped (projects that already had at most one live pack).
    """
    store = packs.store()
    repos = sorted(context.partition_keys)
    before = [store.repo_stats(r) for r in repos]
    results = [store.gc_repo(r) for r in repos]
    swept = store.sweep()
    after_stats = [store.repo_stats(r) for r in repos]
    b, a = _totals(before), _totals(after_stats)
    for r in results:
        context.log.info(f"pack GC {r['repo']}: {r['packs_before']} -> {r['packs_after']} live packs"
                         + (" (skipped)" if r["skipped"] else f", consolidated into {r['consolidated_key']}"))
    metadata = {
        "packs_before": dg.MetadataValue.int(b["live_packs"]),
        "packs_after": dg.MetadataValue.int(a["live_packs"]),
        "bytes_before": dg.MetadataValue.int(b["pack_bytes"]),
        "bytes_after": dg.MetadataValue.int(a["pack_bytes"]),
        "objects_before": dg.MetadataValue.int(b["objects"]),
        "objects_after": dg.MetadataValue.int(a["objects"]),
        "versions": dg.MetadataValue.int(a["versions"]),
        "dedup_ratio": dg.MetadataValue.float(a["dedup_ratio"]),
        "compression_ratio": dg.MetadataValue.float(a["compression_ratio"]),
        "projects_skipped": dg.MetadataValue.int(sum(r["skipped"] for r in results)),
        "packs_swept": dg.MetadataValue.int(swept["tombstoned_deleted"] + swept["orphans_deleted"]),
        "bytes_freed": dg.MetadataValue.int(swept["bytes_freed"]),
    }
    if len(results) == 1 and results[0]["consolidated_key"]:
        metadata["consolidated_key"] = dg.MetadataValue.text(results[0]["consolidated_key"])
    report = store.verify(repos)
    yield dg.MaterializeResult(metadata=metadata)
    yield dg.AssetCheckResult(
        check_name=VERIFIED_CHECK,
        passed=report["ok"],
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "packs_checked": dg.MetadataValue.int(report["packs_checked"]),
            "bytes_checked": dg.MetadataValue.int(report["bytes_checked"]),
            "index_rows": dg.MetadataValue.int(report["index_rows"]),
            "problems": dg.MetadataValue.int(len(report["problems"])),
            **({"details": dg.MetadataValue.md(_problems_md(report["problems"]))} if report["problems"] else {}),
        },
    )


pack_gc = dg.define_asset_job(
    "pack_gc",
    selection=[consolidated_packs],
    description="Consolidate a project's packs into one (pack GC), sweep tombstones past the grace period, verify.",
)


def _store_for_tick(packs: PackResource):
    store = packs.store()
    store.state.lock_wait_sec = SENSOR_LOCK_WAIT_SEC
    return store


@dg.schedule(job=pack_gc, cron_schedule="0 4 * * *", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="04:00 UTC daily: pack GC for every project with more than one live pack or "
                         "tombstones past the grace period.")
def pack_gc_daily(context: dg.ScheduleEvaluationContext, packs: PackResource):
    """Every day, GC each project with more than one live pack or with tombstones left to sweep."""
    try:
        counts = _store_for_tick(packs).pack_counts()
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


@dg.sensor(job=pack_gc, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 5 min: pack GC for a project once it has more than SESSIONLAKE_PACK_GC_LIVE_PACKS "
                       "live packs (default 8), one run per state of its packs.")
def pack_gc_sensor(context: dg.SensorEvaluationContext, packs: PackResource):
    """Start GC for a project once it has more than ``pack_gc_live_packs_threshold`` live packs
    (``SESSIONLAKE_PACK_GC_LIVE_PACKS``, default 8). The run key is the digest of the project's live
    pack keys, so each state of a project is requested once."""
    threshold = packs.settings().pack_gc_live_packs_threshold
    try:
        counts = _store_for_tick(packs).pack_counts()
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


defs = dg.Definitions(assets=[consolidated_packs], jobs=[pack_gc], schedules=[pack_gc_daily],
                      sensors=[pack_gc_sensor])
