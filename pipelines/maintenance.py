"""Lance storage health in Dagster: the lance_maintenance job, its health sensor, a nightly schedule, checks.

- ``lance_storage`` (asset, job ``lance_maintenance``): runs `optimize_lance_storage` and records the
  report as numbers per table (the UI plots versions, bytes, fragments and rows over time) plus a
  Markdown before/after table. A retention below ``settings.lance_retention_floor_sec`` fails the run
  unless ``force`` is set in the run config.
- ``lance_health_sensor``: the first tick in a new code-location process asks for a ``startup`` run;
  later ticks ask for a ``threshold`` run when a table has more prunable versions (older than the
  retention, so a run can actually remove them) or more small fragments than the settings allow, or a
  ``periodic`` run once ``LANCE_OPTIMIZE_INTERVAL_SEC`` has passed since the last one. A wanted run is
  skipped (tick reason + ``lance_storage_optimize_skipped`` event) while a run that targets a Lance
  asset (`pipelines.tags.LANCE_ASSETS`) is active, however it was launched (sensor, CLI, UI
  backfill), or another maintenance run is queued or active, and asked for again on the next tick.
  The cursor keeps the process id and the last request time.
- ``lance_maintenance_nightly``: the same run (phase ``periodic``) every night, with the same guards.
- Checks on ``memory_records`` (tables records, edges, provenance) and ``lance_events`` (table events): versions at
  or below the threshold (WARN above, ERROR at 10x), small fragments likewise, rows unchanged across the
  last optimize, and every table readable (ERROR naming the table when its folder exists but Lance
  cannot open it; the repair is ``sessionlake memory rebuild``). They run after ``lance_storage`` in the
  maintenance job.
"""

import json
import time
import uuid
from datetime import timedelta

import dagster as dg

from pipelines.run_targets import targets_any
from pipelines.tags import LANCE_ASSETS, POOL_LANCE_MAINTENANCE
from resources.configurable import LanceResource
from resources.memory import maintenance as lm
from resources.memory.events import query_events, write_event
from resources.memory.lance import EDGES, EVENTS, PROVENANCE, RECORDS

JOB_NAME = "lance_maintenance"
PHASE_TAG = "sessionlake/maintenance-phase"
LOCATION_BOOT_ID = uuid.uuid4().hex
"""New in every code-location process: the sensor asks for one ``startup`` run per value."""
SENSOR_MIN_INTERVAL_SEC = max(30, int(lm.LANCE_OPTIMIZE_INTERVAL_SEC // 12))
"""Thresholds are looked at 12 times per optimize interval (every 5 minutes at the default hour)."""
NIGHTLY_CRON = "30 3 * * *"
ERROR_FACTOR = 10
"""A check is WARN above its threshold and ERROR at this multiple of it."""

WRITER_ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
MAINTENANCE_PENDING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, *WRITER_ACTIVE]


class MaintenanceConfig(dg.Config):
    phase: str = "manual"
    """startup, periodic, threshold or manual (the event and the run tag say which)."""
    retention_sec: float = lm.LANCE_OPTIMIZE_RETENTION_SEC
    """Versions younger than this are kept."""
    force: bool = False
    """Allow a retention below the floor; only when nothing else uses the Lance tables."""


@dg.asset(pool=POOL_LANCE_MAINTENANCE, group_name="maintenance", kinds={"lancedb"})
def lance_storage(context: dg.AssetExecutionContext, config: MaintenanceConfig,
                  lance: LanceResource) -> dg.MaterializeResult:
    """The Lance tables compacted, indexes updated, versions older than the retention removed."""
    try:
        lm.check_retention(config.retention_sec, lance.settings().lance_retention_floor_sec, config.force)
    except lm.RetentionBelowFloor as exc:
        raise dg.Failure(description=str(exc)) from exc
    report = lm.optimize_lance_storage(lance.store(), timedelta(seconds=config.retention_sec), config.phase)
    metadata: dict[str, dg.MetadataValue] = {}
    for table, entry in report.items():
        for key, value in entry.items():
            if isinstance(value, bool) or value is None or key == "error":
                continue
            metadata[f"{table}_{key}"] = (dg.MetadataValue.float(value) if isinstance(value, float)
                                          else dg.MetadataValue.int(value))
    failed = {t: e["error"] for t, e in report.items() if "error" in e}
    for table, error in failed.items():
        context.log.warning(f"optimize {table} failed, the next run tries again: {error}")
    metadata["tables_failed"] = dg.MetadataValue.int(len(failed))
    metadata["phase"] = dg.MetadataValue.text(config.phase)
    metadata["retention_sec"] = dg.MetadataValue.float(config.retention_sec)
    metadata["report"] = dg.MetadataValue.md(lm.format_report_table(report))
    return dg.MaterializeResult(metadata=metadata)


# -- checks ------------------------------------------------------------------------------------------

def _threshold_result(counts: dict[str, int], threshold: int, what: str) -> dg.AssetCheckResult:
    worst = max(counts.values(), default=0)
    severity = dg.AssetCheckSeverity.ERROR if worst >= ERROR_FACTOR * threshold else dg.AssetCheckSeverity.WARN
    over = [f"{t}: {n:,} {what} > {threshold:,}" for t, n in counts.items() if n > threshold]
    return dg.AssetCheckResult(
        passed=not over, severity=severity,
        description="; ".join(over) + " (run lance_maintenance)" if over else f"every table <= {threshold} {what}",
        metadata={**{f"{t}_{what.replace(' ', '_')}": dg.MetadataValue.int(n) for t, n in counts.items()},
                  "threshold": dg.MetadataValue.int(threshold)},
    )


def _rows_result(store, tables: tuple[str, ...]) -> dg.AssetCheckResult:
    events = query_events(store, kind=lm.OPTIMIZED_EVENT, limit=1)
    if not events:
        return dg.AssetCheckResult(passed=True, description="no optimize has run yet")
    per_table = events[0]["data"].get("per_table", {})
    lost, unverified, metadata = [], [], {}
    for table in tables:
        entry = per_table.get(table, {})
        before, after = entry.get("rows_before"), entry.get("rows_after")
        if before is None or after is None:
            unverified.append(f"{table}: {entry.get('error', 'not in the report')}")
            continue
        metadata[f"{table}_rows_before"] = dg.MetadataValue.int(before)
        metadata[f"{table}_rows_after"] = dg.MetadataValue.int(after)
        if after < before:
            lost.append(f"{table}: {before - after:,} row(s) fewer after optimize ({before:,} -> {after:,})")
        elif after > before:
            unverified.append(f"{table}: {after - before:,} row(s) committed by a writer during optimize")
    metadata["optimize_event_ts"] = dg.MetadataValue.text(str(events[0]["ts"]))
    if lost:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   description="; ".join(lost + unverified), metadata=metadata)
    if unverified:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description="cannot compare: " + "; ".join(unverified), metadata=metadata)
    return dg.AssetCheckResult(passed=True, description="rows unchanged across the last optimize", metadata=metadata)


def _unreadable_result(store, tables: tuple[str, ...]) -> dg.AssetCheckResult | None:
    """An ERROR result naming every table of ``tables`` that exists but cannot be opened, else None."""
    broken = store.unreadable_tables(tables)
    if not broken:
        return None
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                               description="; ".join(str(exc) for exc in broken.values()),
                               metadata={"unreadable_tables": dg.MetadataValue.text(", ".join(broken))})


def storage_checks(asset_key: str, tables: tuple[str, ...]) -> list[dg.AssetChecksDefinition]:
    """The four storage-health checks of one Lance table asset backed by ``tables``."""
    label = ", ".join(tables)

    @dg.asset_check(asset=asset_key, name="lance_versions", additional_deps=[lance_storage],
                    description=f"Versions on disk of {label} at or below lance_versions_threshold "
                                f"(WARN above, ERROR at {ERROR_FACTOR}x).")
    def versions_check(lance: LanceResource) -> dg.AssetCheckResult:
        store = lance.store()
        counts = {t: lm.count_versions(store, t) for t in tables}
        return _threshold_result(counts, lance.settings().lance_versions_threshold, "versions")

    @dg.asset_check(asset=asset_key, name="lance_small_fragments", additional_deps=[lance_storage],
                    description=f"Small fragments of {label} at or below lance_small_fragments_threshold "
                                f"(WARN above, ERROR at {ERROR_FACTOR}x).")
    def small_fragments_check(lance: LanceResource) -> dg.AssetCheckResult:
        store = lance.store()
        unreadable = _unreadable_result(store, tables)
        if unreadable is not None:
            return unreadable
        counts = {t: lm.measure_table(store, t).small_fragments for t in tables}
        return _threshold_result(counts, lance.settings().lance_small_fragments_threshold, "small fragments")

    @dg.asset_check(asset=asset_key, name="lance_rows_preserved_by_optimize", additional_deps=[lance_storage],
                    description=f"Row counts of {label} unchanged across the last optimize "
                                "(ERROR if rows were lost, WARN if a writer made them incomparable).")
    def rows_check(lance: LanceResource) -> dg.AssetCheckResult:
        return _rows_result(lance.store(), tables)

    @dg.asset_check(asset=asset_key, name="lance_tables_readable", additional_deps=[lance_storage],
                    description=f"Every table of {label} opens (ERROR when a folder exists that Lance cannot "
                                "open: never recreated empty; repair with `sessionlake memory rebuild`).")
    def readable_check(lance: LanceResource) -> dg.AssetCheckResult:
        unreadable = _unreadable_result(lance.store(), tables)
        return unreadable or dg.AssetCheckResult(passed=True, description=f"{label}: every table opens")

    return [versions_check, small_fragments_check, rows_check, readable_check]


lance_events = dg.AssetSpec(
    "lance_events", group_name="maintenance", kinds={"lancedb"},
    description="Lance events table: operational events (optimize reports and skips, queue spills, ...).",
)
memory_checks = storage_checks("memory_records", (RECORDS, EDGES, PROVENANCE))
events_checks = storage_checks("lance_events", (EVENTS,))

lance_maintenance = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.assets(lance_storage) | dg.AssetSelection.checks(*memory_checks, *events_checks),
    description="Compact the Lance tables, update indexes, prune old versions; then check their health.",
)


# -- sensor and schedule -----------------------------------------------------------------------------

def blocking_reason(instance: dg.DagsterInstance,
                    repository: dg.RepositoryDefinition | None = None) -> tuple[str, str] | None:
    """``(reason, detail)`` when a maintenance run must wait, else None."""
    active = instance.get_runs(dg.RunsFilter(statuses=WRITER_ACTIVE), limit=200)
    writers = [r for r in active if r.job_name != JOB_NAME and targets_any(r, repository, LANCE_ASSETS)]
    if writers:
        return "writers_active", "Lance writer run(s) in progress: " + ", ".join(
            f"{r.job_name} {r.run_id[:8]}" for r in writers[:5])
    running = instance.get_runs(dg.RunsFilter(job_name=JOB_NAME, statuses=MAINTENANCE_PENDING), limit=1)
    if running:
        return "maintenance_running", f"{JOB_NAME} run {running[0].run_id[:8]} is {running[0].status.value}"
    return None


def _skip(store, phase: str, reason: str, detail: str) -> str:
    write_event(store, lm.SKIPPED_EVENT, {"phase": phase, "reason": reason, "detail": detail})
    return f"{phase} optimize skipped ({reason}): {detail}; trying again next tick"


def _run_request(phase: str, now: float, detail: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{phase}-{int(now * 1000)}",
        run_config=dg.RunConfig({"lance_storage": MaintenanceConfig(
            phase=phase, retention_sec=lm.LANCE_OPTIMIZE_RETENTION_SEC)}),
        tags={PHASE_TAG: phase, "sessionlake/maintenance-reason": detail[:200]},
    )


def _retention_refused(lance: LanceResource) -> str | None:
    try:
        lm.check_retention(lm.LANCE_OPTIMIZE_RETENTION_SEC, lance.settings().lance_retention_floor_sec)
    except lm.RetentionBelowFloor as exc:
        return f"SESSIONLAKE_LANCE_OPTIMIZE_RETENTION_SEC: {exc}"
    return None


def wanted_phase(cursor: dict, now: float, lance: LanceResource) -> tuple[str | None, str]:
    """The phase a run is due for now (None: not due) and why, in words.

    At code-location start an optimize runs only when it has work: a prunable version or more than
    one small fragment in some table. A fresh home has neither, and its first ingest runs alone.
    """
    settings = lance.settings()
    health = lm.measure_store(lance.store(), retention_sec=lm.LANCE_OPTIMIZE_RETENTION_SEC)
    if cursor.get("boot") != LOCATION_BOOT_ID and _has_work(health):
        return "startup", "first tick since the code location started"
    breaches = lm.threshold_breaches(health, settings.lance_versions_threshold,
                                     settings.lance_small_fragments_threshold)
    if breaches:
        return "threshold", "; ".join(breaches)
    since = now - float(cursor.get("last_request_ts", now))
    if since >= lm.LANCE_OPTIMIZE_INTERVAL_SEC:
        return "periodic", f"{since:,.0f}s since the last optimize (interval {lm.LANCE_OPTIMIZE_INTERVAL_SEC:,.0f}s)"
    shape = ", ".join(f"{t}: {h.versions} versions, {h.small_fragments} small fragments" if not isinstance(h, str)
                      else f"{t}: {h}" for t, h in health.items())
    return None, f"healthy ({shape}); periodic optimize in {lm.LANCE_OPTIMIZE_INTERVAL_SEC - since:,.0f}s"


def _has_work(health: dict[str, lm.TableHealth | str]) -> bool:
    return any(not isinstance(h, str) and ((h.prunable_versions or 0) > 0 or h.small_fragments > 1)
               for h in health.values())


def _parse_cursor(raw: str | None) -> dict:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dg.sensor(job=lance_maintenance, minimum_interval_seconds=SENSOR_MIN_INTERVAL_SEC,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description=f"Every {SENSOR_MIN_INTERVAL_SEC} s: a lance_maintenance run at code-location start, when a "
                       "table has more prunable versions or small fragments than its threshold, or "
                       f"{lm.LANCE_OPTIMIZE_INTERVAL_SEC:.0f} s after the last one "
                       "(SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC); skips while a run writes Lance tables.")
def lance_health_sensor(context: dg.SensorEvaluationContext, lance: LanceResource) -> dg.SensorResult:
    """Optimize at startup, when a threshold is crossed, or every interval; wait while Lance writers run."""
    cursor = _parse_cursor(context.cursor)
    refused = _retention_refused(lance)
    if refused:
        return dg.SensorResult(skip_reason=refused, cursor=context.cursor)
    now = time.time()
    phase, detail = wanted_phase(cursor, now, lance)
    if phase is None:
        return dg.SensorResult(skip_reason=f"not due: {detail}",
                               cursor=json.dumps({"last_request_ts": now, **cursor, "boot": LOCATION_BOOT_ID}))
    blocked = blocking_reason(context.instance, context.repository_def)
    if blocked:
        return dg.SensorResult(skip_reason=_skip(lance.store(), phase, *blocked), cursor=context.cursor)
    context.log.info(f"requesting a {phase} optimize: {detail}")
    return dg.SensorResult(run_requests=[_run_request(phase, now, detail)],
                           cursor=json.dumps({"boot": LOCATION_BOOT_ID, "last_request_ts": now}))


@dg.schedule(job=lance_maintenance, cron_schedule=NIGHTLY_CRON, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="03:30 UTC nightly: a periodic Lance optimize with the configured retention, unless a "
                         "run is writing Lance tables.")
def lance_maintenance_nightly(context: dg.ScheduleEvaluationContext, lance: LanceResource):
    """Every night: a ``periodic`` optimize with the configured retention, unless writers are active."""
    refused = _retention_refused(lance)
    if refused:
        return dg.SkipReason(refused)
    blocked = blocking_reason(context.instance, context.repository_def)
    if blocked:
        return dg.SkipReason(_skip(lance.store(), "periodic", *blocked))
    return _run_request("periodic", time.time(), "nightly schedule")


defs = dg.Definitions(
    assets=[lance_storage, lance_events],
    asset_checks=[*memory_checks, *events_checks],
    jobs=[lance_maintenance],
    sensors=[lance_health_sensor],
    schedules=[lance_maintenance_nightly],
)
