"""Session ingestion in Dagster: the four session assets, the one step that materializes them, the
job, and the sensor.

The assets are partitioned by project (one dynamic partition per project of every agent found:
Claude Code's project folders as they are, other agents' projects as ``<agent>:<project>``, see
resources/sources/). One multi-asset
step, `ingest_projects`, walks the selected projects once and runs every selected processor in one
pass (one planning connection, one Lance commit per table, one pack per project), and the job runs
it in process: a run is one process and one step, however many projects it covers. Backfills use
`BackfillPolicy.single_run`, so a backfill over every partition is one run.

Each project gets its own materialization of each asset, carrying that project's own numbers, and
only the projects the run was asked for are materialized (a run over a partition range that the
sensor asked for names its projects in the run config).

The sensor reads no database: it keeps one digest of (path, size, mtime_ns) per project in its
cursor, registers new projects as partitions itself (before anything else, so a failing request can
never hold registration back), and asks for one run per tick covering every changed project.
"""

import hashlib
import json
from collections.abc import Iterable

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from pipelines.partitions import projects_partitions
from pipelines.processors.runner import run_processors
from pipelines.run_recovery import claim_run, reap_dead_runs
from pipelines.run_targets import targets_any
from pipelines.tags import POOL_INGEST, PROCESSOR_ASSETS, QUEUE_TAG
from resources.configurable import LanceResource, PackResource, StateResource
from resources.retry_marks import due_retries, record_failures
from resources.sessions import SessionFile
from resources.settings import Settings
from resources.sources import found_sources, walk_all
from resources.state import scan_session_files

JOB_NAME = "ingest_sessions"
STEP_NAME = "ingest_projects"
INGEST_ASSETS = ("session_files", *PROCESSOR_ASSETS.values())
FILES_CHECK = "files_ingested"
MAX_ERROR_ROWS = 50

ITEM_LABELS = {"usage": "responses_extracted", "memory": "records_extracted", "archive": "versions_extracted"}
"""What one extracted item is, per processor: the label of ``items_extracted`` in the metadata."""
PROCESSOR_LABELS = {
    "scanned": "files_scanned",
    "processed": "files_processed",
    "skipped": "files_unchanged",
    "errors": "files_failed",
    "vanished": "files_vanished",
    "lines_malformed": "lines_malformed",
    "bytes_read": "bytes_read",
}
SESSION_FILES_LABELS = {"files": "files", "bytes": "bytes_on_disk", "new": "files_new", "changed": "files_changed",
                        "missing": "files_missing"}


class IngestConfig(dg.Config):
    projects: list[str] = []
    """Only these projects of the run's partitions (the session sensor's change set); empty: all of them."""


def _description(what: str, processor: str | None = None) -> str:
    if processor is None:
        return (f"{what} Per project: files and bytes_on_disk, files_new, files_changed and files_missing "
                "(known to the warehouse, gone from disk; the archive still has them).")
    return (f"{what} Per project: files_scanned, files_processed, files_unchanged (skipped by stat or hash), "
            f"files_failed, files_vanished, {ITEM_LABELS[processor]}, lines_malformed (kept in the "
            "malformed_lines table) and bytes_read. The files_ingested check fails, with a table of the "
            "files and errors, when any file failed.")


SPECS = [
    dg.AssetSpec("session_files", group_name="sessions", kinds={"duckdb"}, skippable=True,
                 description=_description("The session files on disk, by project, recorded in DuckDB "
                                          "`session_files`.")),
    dg.AssetSpec("usage_messages", deps=["session_files"], group_name="sessions", kinds={"duckdb"}, skippable=True,
                 description=_description("DuckDB `usage_messages`: one row per API response, de-duplicated "
                                          "and costed.", "usage")),
    dg.AssetSpec("memory_records", deps=["session_files"], group_name="sessions", kinds={"lancedb"}, skippable=True,
                 description=_description("Lance `records` and `edges`: every prompt and answer, searchable; one "
                                          "commit per table per run.", "memory")),
    dg.AssetSpec("session_archive", deps=["session_files"], group_name="sessions", kinds={"msgpack"}, skippable=True,
                 description=_description("Content-addressed packs: every version of every session file, one "
                                          "pack per project per run.", "archive")),
]
CHECK_SPECS = [
    dg.AssetCheckSpec(FILES_CHECK, asset=asset,
                      description=f"Every file the {name} processor read in the run succeeded; fails (ERROR) with "
                                  "a table of the failing files, which are retried by the session sensor.")
    for name, asset in PROCESSOR_ASSETS.items()
]


def _processors(selected: set[str], state: StateResource, lance: LanceResource, packs: PackResource) -> list:
    """The processors behind the selected assets, imported only when selected (lancedb costs seconds)."""
    processors = []
    if "usage_messages" in selected:
        from pipelines.processors.usage import UsageProcessor
        from resources.usage.pricing import PriceTable

        processors.append(UsageProcessor(PriceTable.load(state.settings().price_file)))
    if "memory_records" in selected:
        from pipelines.processors.memory import MemoryProcessor

        processors.append(MemoryProcessor(lance.store()))
    if "session_archive" in selected:
        from pipelines.processors.archive import ArchiveProcessor

        processors.append(ArchiveProcessor(packs.store()))
    return processors


def processor_metadata(name: str, stats: dict) -> dict[str, dg.MetadataValue]:
    """One project's (or the run's) runner numbers for a processor asset, with their labels."""
    metadata = {label: dg.MetadataValue.int(int(stats[key])) for key, label in PROCESSOR_LABELS.items()}
    metadata[ITEM_LABELS[name]] = dg.MetadataValue.int(int(stats["items_extracted"]))
    return metadata


def _error_table(rows: list[tuple[str, dict]]) -> str:
    lines = [f"| `{project}` | `{e['file']}` | {e['error'].replace('|', '/')} |"
             for project, e in rows[:MAX_ERROR_ROWS]]
    more = [f"| | | ... and {len(rows) - MAX_ERROR_ROWS} more |"] if len(rows) > MAX_ERROR_ROWS else []
    return "| project | file | error |\n|---|---|---|\n" + "\n".join(lines + more)


def _check_result(name: str, stats: dict, projects: list[str], retry_dir,
                  unpriced: dict[str, int]) -> dg.AssetCheckResult:
    rows = [(p, e) for p in projects for e in stats["by_project"].get(p, {}).get("error_files", [])]
    extras = {k: v for k, v in stats.items() if k not in ("by_project", "error_files", "failed_files")
              and k not in PROCESSOR_LABELS and k != "items_extracted" and isinstance(v, int | float)}
    metadata = {
        "files_failed": dg.MetadataValue.int(int(stats["errors"])),
        "projects": dg.MetadataValue.int(len(projects)),
        **{f"run_{k}": dg.MetadataValue.int(v) if isinstance(v, int) else dg.MetadataValue.float(v)
           for k, v in extras.items()},
    }
    if unpriced:
        metadata["unpriced_models"] = dg.MetadataValue.md("| model | responses |\n|---|---|\n" + "\n".join(
            f"| `{model}` | {n:,} |" for model, n in sorted(unpriced.items())))
    if rows:
        metadata["failed_files"] = dg.MetadataValue.md(_error_table(rows))
        metadata["retry_markers"] = dg.MetadataValue.path(str(retry_dir))
    return dg.AssetCheckResult(
        asset_key=PROCESSOR_ASSETS[name], check_name=FILES_CHECK, passed=not rows,
        severity=dg.AssetCheckSeverity.ERROR, metadata=metadata,
        description=(f"{stats['errors']} file(s) failed; they stay unprocessed and are retried (markers in "
                     f"{retry_dir})" if rows else f"no file failed in {len(projects)} project(s)"),
    )


@dg.multi_asset(
    name=STEP_NAME,
    specs=SPECS,
    check_specs=CHECK_SPECS,
    partitions_def=projects_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
    pool=POOL_INGEST,
    description="Scan the selected projects once and run every selected processor over their new and changed files.",
)
def ingest_projects(context: dg.AssetExecutionContext, config: IngestConfig, state: StateResource,
                    lance: LanceResource, packs: PackResource):
    claim_run(context.instance, context.run.run_id)
    settings = state.settings()
    in_run = list(context.partition_keys)
    projects = [p for p in in_run if p in set(config.projects)] if config.projects else in_run
    if config.projects and len(projects) < len(set(config.projects)):
        context.log.warning(f"projects not in this run's partitions, ignored: "
                            f"{sorted(set(config.projects) - set(in_run))}")
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    files = list(walk_all(found_sources(settings), set(projects)))
    if "session_files" in selected:
        with state.store().connect() as conn:
            scan = scan_session_files(conn, files, set(projects))
        for project in projects:
            yield dg.AssetMaterialization(
                "session_files", partition=project,
                metadata={label: dg.MetadataValue.int(scan[project][key]) for key, label in
                          SESSION_FILES_LABELS.items()})
    processors = _processors(selected, state, lance, packs)
    if not processors:
        return
    results = run_processors(processors, settings.sessions_dir, state.store(), projects=set(projects),
                             logger=context.log, files=files)
    for processor in processors:
        stats = results[processor.name]
        asset = PROCESSOR_ASSETS[processor.name]
        for project in projects:
            per = stats["by_project"].get(project) or {**dict.fromkeys(PROCESSOR_LABELS, 0), "items_extracted": 0}
            record_failures(settings.retry_dir, processor.name, project, per.get("failed_files", []))
            yield dg.AssetMaterialization(asset, partition=project, metadata=processor_metadata(processor.name, per))
        if stats["errors"]:
            context.log.warning(f"{processor.name}: {stats['errors']} file(s) failed; retried by the session sensor")
        unpriced = getattr(processor, "unpriced_models", None) or {}
        if unpriced:
            context.log.warning(f"models without a price (reported, never costed at $0): {sorted(unpriced)}")
        yield _check_result(processor.name, stats, projects, settings.retry_dir, unpriced)


ingest_sessions = dg.define_asset_job(
    JOB_NAME,
    # The Lance storage-health checks on memory_records are table-wide and slow: maintenance runs them.
    selection=dg.AssetSelection.assets(*INGEST_ASSETS).without_checks()
    | dg.AssetSelection.checks(*(spec.key for spec in CHECK_SPECS)),
    tags={QUEUE_TAG: "ingest"},
    description="Scan the sessions tree and run every processor (usage, memory, archive) on new and changed "
                "files: one process, one step, one pass per run.",
)


def project_fingerprints(files: Iterable[SessionFile]) -> dict[str, str]:
    """Per project, a digest of every file's (key, size, mtime_ns) (stats only: the walk reads no file
    but a new Codex rollout's first line, once, for its project)."""
    entries: dict[str, list[str]] = {}
    for f in files:
        entries.setdefault(f.project, []).append(f"{f.key}\0{f.size}\0{f.mtime_ns}")
    return {
        project: hashlib.blake2b("\n".join(lines).encode(), digest_size=12).hexdigest()
        for project, lines in entries.items()
    }


def partition_run_request(order: list[str], projects: list[str], run_key: str | None = None,
                          tags: dict[str, str] | None = None) -> dg.RunRequest:
    """One run request for ``projects`` (any subset of the partitions, in any order): one partition, or
    the range spanning them in the instance's partition ``order`` with the exact set in the run config."""
    position = {p: i for i, p in enumerate(order)}
    wanted = sorted(projects, key=position.__getitem__)
    config = dg.RunConfig(ops={STEP_NAME: IngestConfig(projects=wanted)})
    if len(wanted) == 1:
        return dg.RunRequest(run_key=run_key, partition_key=wanted[0], run_config=config, tags=tags or {})
    range_tags = {ASSET_PARTITION_RANGE_START_TAG: wanted[0], ASSET_PARTITION_RANGE_END_TAG: wanted[-1]}
    return dg.RunRequest(run_key=run_key, run_config=config, tags={**(tags or {}), **range_tags})


NOT_STARTED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]


def _parse_cursor(raw: str | None) -> dict[str, str]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    digests = value.get("digests", {}) if isinstance(value, dict) else {}
    return digests if isinstance(digests, dict) else {}


SENSOR_INTERVAL_SEC = Settings.sensor_interval_from_env()
"""Read once, at import, from ``SESSIONLAKE_SENSOR_INTERVAL_SEC`` (default 60)."""


@dg.sensor(job=ingest_sessions, minimum_interval_seconds=SENSOR_INTERVAL_SEC,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description=f"Every {SENSOR_INTERVAL_SEC} s (SESSIONLAKE_SENSOR_INTERVAL_SEC): registers new projects "
                       "as partitions and asks for one ingest_sessions run for every project with new or changed "
                       "files or failed files due for a retry; while a run is still queued, changes wait for the "
                       "next one.")
def session_files_sensor(context: dg.SensorEvaluationContext, state: StateResource) -> dg.SensorResult:
    """Ingest projects with new or changed files, or with failed files due for a retry: one run per tick.

    New projects are registered as partitions first (at most ``SESSIONLAKE_SENSOR_MAX_NEW_PARTITIONS``
    per tick, the rest next tick). While an ingest run is still waiting to start, changes wait for it
    to start and go into the next run (never dropped, never a backlog). Dead runs are reaped every tick.
    """
    settings = state.settings()
    instance = context.instance
    try:
        reaped = reap_dead_runs(instance)
        if reaped:
            context.log.warning(f"marked {len(reaped)} run(s) whose process died as failed: {reaped}")
    except Exception as exc:  # recovery is best effort: it must never stop ingestion
        context.log.warning(f"could not check for dead runs: {exc}")
    sources = found_sources(settings)
    if not sources:
        looked = "; ".join(f"{agent}: {root} does not exist" for agent, root in settings.agent_roots().items())
        return dg.SensorResult(skip_reason=f"no session data ({looked})", cursor=context.cursor)
    previous = _parse_cursor(context.cursor)
    current = project_fingerprints(walk_all(sources))
    known = set(instance.get_dynamic_partitions(projects_partitions.name))
    new_projects = sorted(p for p in current if p not in known)[: settings.sensor_max_new_partitions]
    if new_projects:
        instance.add_dynamic_partitions(projects_partitions.name, new_projects)
    ready = known | set(new_projects)
    changed = {p for p, fp in current.items() if p in ready and previous.get(p) != fp}
    retries = {p: token for p, token in due_retries(settings.retry_dir).items() if p in ready}
    pending = sorted(changed | set(retries))
    kept = {p: fp for p, fp in previous.items() if p in current}
    if not pending:
        return dg.SensorResult(cursor=json.dumps({"digests": kept}, sort_keys=True),
                               skip_reason=f"no changes in {len(current)} project(s)")
    waiting = [r for r in instance.get_runs(dg.RunsFilter(statuses=NOT_STARTED), limit=50)
               if targets_any(r, context.repository_def, INGEST_ASSETS)]  # a queued UI backfill counts too
    if waiting:
        return dg.SensorResult(
            cursor=json.dumps({"digests": kept}, sort_keys=True),
            skip_reason=f"{len(pending)} project(s) changed; they go into the next run once run "
                        f"{waiting[0].run_id[:8]} ({waiting[0].status.value}) has started")
    marks = [f"{p}\0{current.get(p, '')}\0{retries.get(p, '')}" for p in pending]
    run_key = "ingest:" + hashlib.blake2b("\n".join(marks).encode(), digest_size=12).hexdigest()
    order = instance.get_dynamic_partitions(projects_partitions.name)
    request = partition_run_request(order, pending, run_key=run_key)
    context.log.info(f"requesting one run for {len(pending)} project(s) ({len(retries)} retried)")
    kept.update((p, current[p]) for p in pending if p in current)
    return dg.SensorResult(run_requests=[request], cursor=json.dumps({"digests": kept}, sort_keys=True))


defs = dg.Definitions(assets=[ingest_projects], jobs=[ingest_sessions], sensors=[session_files_sensor])
