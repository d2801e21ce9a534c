"""The lance_storage asset (compaction, index updates and version cleanup of every Lance table) and the
lance_events table it writes to."""

import uuid
from datetime import timedelta

import dagster as dg

from pipelines.defs.resources import LanceResource
from pipelines.defs.tags import POOL_LANCE_MAINTENANCE
from resources.config.settings import Settings
from resources.memory import maintenance as lm
from resources.memory.schema import EVENTS

JOB_NAME = "lance_maintenance"

PHASE_TAG = "sessionlake/maintenance-phase"

LOCATION_BOOT_ID = uuid.uuid4().hex
"""New in every code-location process: the sensor asks for one ``startup`` run per value."""


def sensor_min_interval_sec(settings: Settings) -> int:
    """Thresholds are looked at 12 times per optimize interval (every 5 minutes at the default hour)."""
    return max(30, int(settings.lance_optimize_interval_sec // 12))


NIGHTLY_CRON = "30 3 * * *"

ERROR_FACTOR = 10
"""A check is WARN above its threshold and ERROR at this multiple of it."""

WRITER_ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]

MAINTENANCE_PENDING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, *WRITER_ACTIVE]


class MaintenanceConfig(dg.Config):
    phase: str = "manual"
    """startup, periodic, threshold or manual (the event and the run tag say which)."""
    retention_sec: float | None = None
    """Versions younger than this are kept; None: ``settings.lance_optimize_retention_sec``."""
    force: bool = False
    """Allow a retention below the floor; only when nothing else uses the Lance tables."""


recall_provenance = dg.AssetSpec(
    "recall_provenance", deps=["memory_records", "capture_records"], group_name="memory", kinds={"lancedb"},
    description="Lance `provenance`: one row per record a recall returned (when, which cue, which session), "
                "appended by every recall (`sessionlake recall`, the MCP server) through the write-behind queue, "
                "outside any run.",
)


@dg.asset(pool=POOL_LANCE_MAINTENANCE, group_name="maintenance", kinds={"lancedb"},
          deps=["memory_records", "capture_records", "team_sessions", "recall_provenance"])
def lance_storage(context: dg.AssetExecutionContext, config: MaintenanceConfig,
                  lance: LanceResource) -> dg.MaterializeResult:
    """The Lance tables compacted, indexes updated, versions older than the retention removed."""
    settings = lance.settings()
    retention_sec = settings.lance_optimize_retention_sec if config.retention_sec is None else config.retention_sec
    try:
        lm.check_retention(retention_sec, settings.lance_retention_floor_sec, config.force)
    except lm.RetentionBelowFloor as exc:
        raise dg.Failure(description=str(exc)) from exc
    report = lm.optimize_lance_storage(lance.store(), timedelta(seconds=retention_sec), config.phase)
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
    metadata["retention_sec"] = dg.MetadataValue.float(retention_sec)
    metadata["report"] = dg.MetadataValue.md(lm.format_report_table(report))
    context.log_event(dg.AssetMaterialization("lance_events", metadata={  # the run's optimize report is an event
        "dagster/row_count": dg.MetadataValue.int(lance.store().count(EVENTS))}))
    return dg.MaterializeResult(metadata=metadata)


lance_events = dg.AssetSpec(
    "lance_events", deps=["memory_records", "lance_storage"], group_name="maintenance", kinds={"lancedb"},
    description="Lance `events`: operational events (memory ingest summaries, optimize reports and skips, "
                "queue spills). Materialized by every run that writes one.",
)
