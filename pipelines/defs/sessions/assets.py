"""The session assets: one partitioned multi-asset step, `ingest_projects`, that materializes session_files
and the three processor assets, and its files_ingested checks."""

from importlib.metadata import version

import dagster as dg
from dagster._core.definitions.data_version import (
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    compute_logical_data_version,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)

from pipelines.defs.partitions import ProjectsConfig, projects_partitions, selected_projects
from pipelines.defs.resources import LanceResource, PackResource, StateResource
from pipelines.defs.sessions import holdings
from pipelines.defs.sessions.checks import FRESH_CHECK, FRESH_CHECK_SPECS, freshness_results
from pipelines.defs.sessions.event_batch import batched
from pipelines.defs.tags import POOL_INGEST, PROCESSOR_ASSETS, QUEUE_TAG
from pipelines.instance.run_recovery import claim_run
from resources.archive.pack_format import FORMAT_VERSION as PACK_FORMAT_VERSION
from resources.ingest.prefetch import Prefetch
from resources.ingest.retry_marks import record_failures
from resources.ingest.runner import iter_processors
from resources.ingest.session_files import project_fingerprints
from resources.memory.schema import EVENTS
from resources.memory.schema import SCHEMA_VERSION as RECORDS_SCHEMA_VERSION
from resources.sources import found_sources, walk_all
from resources.state.store import scan_session_files
from resources.usage.pricing import RULES_VERSION

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

BACKFILL_TAG = "dagster/backfill"
"""The tag Dagster gives every run of a backfill."""

USAGE_TOTALS = "usage_totals"
"""The whole warehouse, materialized by every run that changed usage rows (see `usage_totals_spec`)."""

CODE_VERSIONS = {
    "usage_messages": f"rules-{RULES_VERSION}.genai-prices-{version('genai-prices')}",
    "memory_records": f"records-schema-{RECORDS_SCHEMA_VERSION}",
    "session_archive": f"pack-format-{PACK_FORMAT_VERSION}",
}
"""What each processor asset's content depends on besides the session files: the counting and pricing
rules (and the price database's release), the records schema, the pack format. A change shows the
asset's partitions as changed in the UI; one backfill brings them to the new version."""

SESSION_FILES_LABELS = {"files": "files", "bytes": "bytes_on_disk", "new": "files_new", "changed": "files_changed",
                        "missing": "files_missing"}


class IngestConfig(ProjectsConfig):
    verify_content: bool = False
    """Hash every file, not only those whose size or mtime changed (``sessionlake ingest --all``; a
    backfill always does): a same-size rewrite with its mtime put back is read again."""


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
    dg.AssetSpec("usage_messages", deps=["session_files"], group_name="sessions",
                 code_version=CODE_VERSIONS["usage_messages"], kinds={"duckdb"}, skippable=True,
                 description=_description("DuckDB `usage_messages`: one row per API response, de-duplicated "
                                          "and costed.", "usage")),
    dg.AssetSpec("memory_records", deps=["session_files"], group_name="sessions",
                 code_version=CODE_VERSIONS["memory_records"], kinds={"lancedb"}, skippable=True,
                 description=_description("Lance `records` and `edges`: every prompt and answer, searchable; one "
                                          "commit per table per run.", "memory")),
    dg.AssetSpec("session_archive", deps=["session_files"], group_name="sessions",
                 code_version=CODE_VERSIONS["session_archive"], kinds={"msgpack"}, skippable=True,
                 description=_description("Content-addressed packs: every version of every session file, one "
                                          "pack per project per run.", "archive")),
]

CHECK_SPECS = [
    dg.AssetCheckSpec(FILES_CHECK, asset=asset,
                      description=f"Every file the {name} processor read in the run succeeded; fails (ERROR) with "
                                  "a table of the failing files, which are retried by the session sensor.")
    for name, asset in PROCESSOR_ASSETS.items()
]


def _processors(selected: set[str], state: StateResource, lance: LanceResource, packs: PackResource,
                prefetch: Prefetch | None) -> list:
    """The processors behind the selected assets, imported only when selected (lancedb costs seconds);
    usage first, so the warehouse that reports read is done (and materialized) before the rest. Usage takes
    the price database's prices from ``prefetch``'s worker when it computed them."""
    processors = []
    if "usage_messages" in selected:
        from resources.ingest.processors.usage import UsageProcessor
        from resources.usage.pricing import PriceTable

        processors.append(UsageProcessor(PriceTable.load(state.settings().price_file, database=prefetch)))
    if "memory_records" in selected:
        from resources.ingest.processors.memory import MemoryProcessor

        processors.append(MemoryProcessor(lance.store()))
    if "session_archive" in selected:
        from resources.ingest.processors.archive import ArchiveProcessor

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
    check_specs=[*CHECK_SPECS, *FRESH_CHECK_SPECS],
    partitions_def=projects_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
    pool=POOL_INGEST,
    description="Scan the selected projects once and run every selected processor over their new and changed files.",
)
def ingest_projects(context: dg.AssetExecutionContext, config: IngestConfig, state: StateResource,
                    lance: LanceResource, packs: PackResource, prefetch: dg.ResourceParam[Prefetch | None]):
    claim_run(context.instance, context.run.run_id)
    if BACKFILL_TAG in context.run.tags and QUEUE_TAG not in context.run.tags:
        # Dagster gives an asset backfill's runs no job tags; label its lane as the job's own runs have it
        context.instance.add_run_tags(context.run.run_id, {QUEUE_TAG: "ingest"})
    settings = state.settings()
    projects = selected_projects(context, config)
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    backfill = BACKFILL_TAG in context.run.tags
    files = list(walk_all(found_sources(settings), set(projects)))
    versions = project_fingerprints(files)
    if "session_files" in selected:
        with state.store().connect() as conn:
            scan = scan_session_files(conn, files, set(projects))
        yield from batched(context, _session_files_events(projects, scan, versions, backfill))
    processors = _processors(selected, state, lance, packs, prefetch)
    if not processors:
        return
    by_name = {p.name: p for p in processors}  # usage first: its rows are reported while memory and archive run
    inputs = context.instance.get_latest_storage_id_by_partition(
        dg.AssetKey("session_files"), dg.DagsterEventType.ASSET_MATERIALIZATION, set(projects))
    verify = config.verify_content or backfill
    for name, stats in iter_processors(processors, settings.sessions_dir, state.store(), projects=set(projects),
                                       logger=context.log, files=files, verify=verify, prefetch=prefetch):
        processor = by_name[name]
        asset = PROCESSOR_ASSETS[processor.name]
        changed = [p for p in projects if _changed(stats["by_project"].get(p))]
        held = _holdings(processor.name, projects if backfill else changed, state, lance, packs)
        events = []
        for project in projects:
            per = stats["by_project"].get(project) or {**dict.fromkeys(PROCESSOR_LABELS, 0), "items_extracted": 0}
            record_failures(settings.retry_dir, processor.name, project, per.get("failed_files", []))
            run_numbers = processor_metadata(processor.name, per)
            tags = _provenance_tags(asset, versions.get(project, NO_FILES), inputs.get(project))
            if project in changed:
                events.append(dg.AssetMaterialization(asset, partition=project, tags=tags,
                                                      metadata={**held.get(project, {}), **run_numbers}))
                continue
            # Nothing in it changed: the run's zeros go to an observation, so the partition's plots keep its
            # numbers. A backfill still materializes it (Dagster counts a requested partition left
            # unmaterialized as failed), with what it holds and under the current code version.
            events.append(dg.AssetObservation(asset, partition=project, metadata=run_numbers))
            if backfill:
                events.append(dg.AssetMaterialization(asset, partition=project, tags=tags,
                                                      metadata=held.get(project, {})))
        yield from batched(context, events)
        if stats["errors"]:
            context.log.warning(f"{processor.name}: {stats['errors']} file(s) failed; retried by the session sensor")
        unpriced = getattr(processor, "unpriced_models", None) or {}
        if unpriced:
            context.log.warning(f"models without a price (reported, never costed at $0): {sorted(unpriced)}")
        yield _check_result(processor.name, stats, projects, settings.retry_dir, unpriced)
        if processor.name == "usage" and changed:
            with state.store().connect() as conn:
                context.log_event(dg.AssetMaterialization(USAGE_TOTALS, tags=_code_version_tag("usage_messages"),
                                                          metadata=holdings.usage_totals(conn)))
        if processor.name == "memory" and changed:  # its run summary is a row of the events table
            context.log_event(dg.AssetMaterialization("lance_events", metadata={
                "dagster/row_count": dg.MetadataValue.int(lance.store().count(EVENTS))}))
    if prefetch is not None:
        context.log.info(prefetch.summary())
    yield from _freshness(context, settings, state, files, [p.name for p in processors])


def _session_files_events(projects: list[str], scan: dict, versions: dict[str, str], backfill: bool):
    """session_files' event of each project: a materialization where its files changed (or in a backfill),
    an observation of its numbers where they did not."""
    for project in projects:
        numbers = {label: dg.MetadataValue.int(scan[project][key]) for key, label in SESSION_FILES_LABELS.items()}
        if backfill or scan[project]["new"] or scan[project]["changed"] or scan[project]["missing"]:
            yield dg.AssetMaterialization("session_files", partition=project,
                                          tags=_files_version_tags(versions.get(project, NO_FILES)),
                                          metadata={**numbers, "dagster/row_count": numbers["files"]})
        else:
            yield dg.AssetObservation("session_files", partition=project, metadata=numbers)


def _freshness(context: dg.AssetExecutionContext, settings, state: StateResource, files: list,
               processors: list[str]):
    """The files_fresh results the run was asked for (a UI backfill asks; sensor runs leave them to the
    freshness sensor), over the run's projects."""
    wanted = [name for name in processors if dg.AssetCheckKey(dg.AssetKey(PROCESSOR_ASSETS[name]), FRESH_CHECK)
              in context.selected_asset_check_keys]
    for evaluation in freshness_results(settings, state.store(), files, wanted) if wanted else []:
        yield dg.AssetCheckResult(asset_key=evaluation.asset_key, check_name=FRESH_CHECK, passed=evaluation.passed,
                                  severity=evaluation.severity, metadata=evaluation.metadata,
                                  description=evaluation.description)


def _code_version_tag(asset: str) -> dict[str, str]:
    """The tag Dagster reads a materialization's code version from; it sets it itself only on outputs, and
    this step reports each partition with an event of its own."""
    return {"dagster/code_version": CODE_VERSIONS[asset]}


NO_FILES = "no-files"
"""The data version of a project with no session file left on disk."""


def _files_version_tags(fingerprint: str) -> dict[str, str]:
    """A session_files partition's data version: the digest of its files' (key, size, mtime_ns), the one the
    session sensor compares."""
    return {DATA_VERSION_TAG: fingerprint, DATA_VERSION_IS_USER_PROVIDED_TAG: "true"}


def _provenance_tags(asset: str, files_version: str, files_event: int | None) -> dict[str, str]:
    """The data provenance Dagster records on an output's materialization (code version, the session_files
    version and event it was computed from, and the data version that follows), so the UI's "unsynced"
    status compares this partition with its own session_files partition instead of reporting a new
    dependency."""
    tags = _code_version_tag(asset)
    if files_event is None:  # session_files was never materialized for it: nothing to point at
        return tags
    upstream = {dg.AssetKey("session_files"): dg.DataVersion(files_version)}
    return {**tags,
            get_input_data_version_tag(dg.AssetKey("session_files")): files_version,
            get_input_event_pointer_tag(dg.AssetKey("session_files")): str(files_event),
            DATA_VERSION_TAG: compute_logical_data_version(CODE_VERSIONS[asset], upstream).value}


def _changed(per: dict | None) -> bool:
    """Whether a run changed what a processor asset holds for a project: a file processed, failed or gone."""
    return bool(per) and bool(per["processed"] or per["errors"] or per["vanished"])


def _holdings(name: str, projects: list[str], state: StateResource, lance: LanceResource,
              packs: PackResource) -> dict[str, dict[str, dg.MetadataValue]]:
    """What the processor's asset holds for each of ``projects`` (one query per asset, not per project)."""
    if not projects:
        return {}
    if name == "usage":
        with state.store().connect() as conn:
            return holdings.usage_holdings(conn, projects)
    if name == "memory":
        from resources.memory.stats import records_per_project

        return holdings.memory_holdings(records_per_project(lance.store(), projects), projects)
    return holdings.archive_holdings(packs.store().repos_stats(projects))


@dg.asset(
    name=USAGE_TOTALS, deps=["usage_messages", "team_sessions"], group_name="sessions", kinds={"duckdb"},
    code_version=CODE_VERSIONS["usage_messages"],
    description="The whole usage warehouse: responses, tokens and cost (as `sessionlake usage` reports them by "
                "default), and this week's spend by project and by model as tables. Materialized by every run "
                "that changed usage rows, session or team ingest alike; materializing it alone recomputes the "
                "totals from what is stored (a new week's tables, say).",
)
def usage_totals(state: StateResource) -> dg.MaterializeResult:
    with state.store().connect() as conn:
        return dg.MaterializeResult(metadata=holdings.usage_totals(conn))
