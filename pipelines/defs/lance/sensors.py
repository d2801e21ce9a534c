"""The lance_health_sensor and the guard that keeps maintenance away from runs that write Lance tables."""

import json
import time

import dagster as dg

from pipelines.defs.lance.assets import (
    JOB_NAME,
    LOCATION_BOOT_ID,
    MAINTENANCE_PENDING,
    PHASE_TAG,
    WRITER_ACTIVE,
    MaintenanceConfig,
    sensor_min_interval_sec,
)
from pipelines.defs.lance.jobs import lance_maintenance
from pipelines.defs.resources import LanceResource
from pipelines.defs.run_targets import targets_any
from pipelines.defs.tags import LANCE_ASSETS
from resources.config.settings import Settings
from resources.memory import maintenance as lm
from resources.memory.events import write_event
from resources.memory.table_ledger import lost_tables_line
from resources.state.store import is_lock_conflict


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


def record_skip(store, phase: str, reason: str, detail: str) -> str:
    write_event(store, lm.SKIPPED_EVENT, {"phase": phase, "reason": reason, "detail": detail})
    return f"{phase} optimize skipped ({reason}): {detail}; trying again next tick"


def maintenance_run_request(phase: str, now: float, detail: str, settings: Settings) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{phase}-{int(now * 1000)}",
        run_config=dg.RunConfig({"lance_storage": MaintenanceConfig(
            phase=phase, retention_sec=settings.lance_optimize_retention_sec)}),
        tags={PHASE_TAG: phase, "sessionlake/maintenance-reason": detail[:200]},
    )


def retention_refused(settings: Settings) -> str | None:
    try:
        lm.check_retention(settings.lance_optimize_retention_sec, settings.lance_retention_floor_sec)
    except lm.RetentionBelowFloor as exc:
        return f"SESSIONLAKE_LANCE_OPTIMIZE_RETENTION_SEC: {exc}"
    return None


def wanted_phase(cursor: dict, now: float, settings: Settings, store) -> tuple[str | None, str]:
    """The phase a run is due for now (None: not due) and why, in words (``store``: the home's `LanceStore`).

    At code-location start an optimize runs only when it has work: a prunable version or more than
    one small fragment in some table. A fresh home has neither, and its first ingest runs alone.
    """
    health = lm.measure_store(store, retention_sec=settings.lance_optimize_retention_sec)
    if cursor.get("boot") != LOCATION_BOOT_ID and _has_work(health):
        return "startup", "first tick since the code location started"
    breaches = lm.threshold_breaches(health, settings.lance_versions_threshold,
                                     settings.lance_small_fragments_threshold)
    if breaches:
        return "threshold", "; ".join(breaches)
    since = now - float(cursor.get("last_request_ts", now))
    interval = settings.lance_optimize_interval_sec
    if since >= interval:
        return "periodic", f"{since:,.0f}s since the last optimize (interval {interval:,.0f}s)"
    shape = ", ".join(f"{t}: {h.versions} versions, {h.small_fragments} small fragments" if not isinstance(h, str)
                      else f"{t}: {h}" for t, h in health.items())
    return None, f"healthy ({shape}); periodic optimize in {interval - since:,.0f}s"


def _has_work(health: dict[str, lm.TableHealth | str]) -> bool:
    return any(not isinstance(h, str) and ((h.prunable_versions or 0) > 0 or h.small_fragments > 1)
               for h in health.values())


def _parse_cursor(raw: str | None) -> dict:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def lance_health_sensor(settings: Settings) -> dg.SensorDefinition:
    """The ``lance_health_sensor``, ticking at `sensor_min_interval_sec` of ``settings``."""
    every = sensor_min_interval_sec(settings)
    return dg.sensor(
        name="lance_health_sensor", job=lance_maintenance, minimum_interval_seconds=every,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Every {every} s: a lance_maintenance run at code-location start, when a table has more "
                    "prunable versions or small fragments than its threshold, or "
                    f"{settings.lance_optimize_interval_sec:.0f} s after the last one "
                    "(SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC); skips while a run writes Lance tables or a table "
                    "that existed is gone.",
    )(lance_health_tick)


def lance_health_tick(context: dg.SensorEvaluationContext, lance: LanceResource) -> dg.SensorResult:
    """Optimize at startup, when a threshold is crossed, or every interval; wait while Lance writers run. A tick
    that finds the warehouse (where the tables are recorded) held by another process skips: on a new home the
    first ingest run holds it while the tables are created."""
    try:
        return _health_tick(context, lance.settings(tick=True))
    except Exception as exc:
        if is_lock_conflict(exc):
            return dg.SensorResult(skip_reason="the warehouse is busy (a run holds it); the next tick retries",
                                   cursor=context.cursor)
        raise


def _health_tick(context: dg.SensorEvaluationContext, settings: Settings) -> dg.SensorResult:
    from resources.memory.lance import LanceStore

    cursor = _parse_cursor(context.cursor)
    refused = retention_refused(settings) or lost_tables_line(settings)
    if refused:
        return dg.SensorResult(skip_reason=refused, cursor=context.cursor)
    now = time.time()
    store = LanceStore.from_settings(settings)
    phase, detail = wanted_phase(cursor, now, settings, store)
    if phase is None:
        return dg.SensorResult(skip_reason=f"not due: {detail}",
                               cursor=json.dumps({"last_request_ts": now, **cursor, "boot": LOCATION_BOOT_ID}))
    blocked = blocking_reason(context.instance, context.repository_def)
    if blocked:
        return dg.SensorResult(skip_reason=record_skip(store, phase, *blocked), cursor=context.cursor)
    context.log.info(f"requesting a {phase} optimize: {detail}")
    return dg.SensorResult(run_requests=[maintenance_run_request(phase, now, detail, settings)],
                           cursor=json.dumps({"boot": LOCATION_BOOT_ID, "last_request_ts": now}))
