"""Session ingestion in Dagster: the session_files asset, one asset per processor, the job, the sensor.

Everything is partitioned by project (one dynamic partition per top-level folder); per-file state
lives in DuckDB and files are batched inside a run. The sensor reads no database: it keeps a
fingerprint of (path, size, mtime_ns) per project in its cursor and asks for runs of the projects
whose fingerprint moved.
"""


import hashlib
import json
import os

import dagster as dg

# A sensor launches a backfill through these two; Dagster has no public constructor for them yet.
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey

from pipelines.partitions import projects_partitions
from pipelines.processors.runner import run_processors
from pipelines.tags import POOL_ARCHIVE, POOL_MEMORY, POOL_USAGE, WRITES_LANCE
from resources.configurable import LanceResource, PackResource, StateResource
from resources.retry_marks import due_retries, record_failures
from resources.sessions import walk_sessions
from resources.state import scan_session_files

BACKFILL_ABOVE_PROJECTS = 10
"""A tick that finds more changed projects than this launches one backfill instead of single runs."""

_INGEST_ASSETS = ("session_files", "usage_messages", "memory_records", "session_archive")


@dg.asset(partitions_def=projects_partitions, group_name="sessions")
def session_files(context: dg.AssetExecutionContext, state: StateResource) -> dg.MaterializeResult:
    """What is on disk for the project(s): files, bytes, and how many are new, changed or gone."""
    settings = state.settings()
    projects = set(context.partition_keys)
    files = list(walk_sessions(settings.sessions_dir, projects))
    with state.store().connect() as conn:
        scan = scan_session_files(conn, files, projects)
    return dg.MaterializeResult(metadata={
        "files": dg.MetadataValue.int(len(files)),
        "bytes": dg.MetadataValue.int(sum(f.size for f in files)),
        "new_files": dg.MetadataValue.int(scan["new"]),
        "changed_files": dg.MetadataValue.int(scan["changed"]),
        "missing_files": dg.MetadataValue.int(scan["missing"]),
    })


def _run_processor(context: dg.AssetExecutionContext, state: StateResource, processor) -> dg.MaterializeResult:
    settings = state.settings()
    stats = run_processors([processor], settings.sessions_dir, state.store(),
                           projects=set(context.partition_keys), logger=context.log)[processor.name]
    failed = stats.pop("failed_files")
    for project in context.partition_keys:
        record_failures(settings.retry_dir, processor.name, project,
                        [key for key in failed if key.split("/", 1)[0] == project])
    errors = stats.pop("error_files")
    metadata = {k: dg.MetadataValue.int(int(v)) for k, v in stats.items() if isinstance(v, int | float)}
    if errors:
        metadata["error_files"] = dg.MetadataValue.md(
            "| file | error |\n|---|---|\n" + "\n".join(f"| `{e['file']}` | {e['error']} |" for e in errors)
        )
        context.log.warning(f"{processor.name}: {stats['errors']} file(s) failed and will be retried next run")
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(partitions_def=projects_partitions, deps=[session_files],
          pool=POOL_USAGE, group_name="sessions")
def usage_messages(context: dg.AssetExecutionContext, state: StateResource) -> dg.MaterializeResult:
    """DuckDB ``usage_messages``: one row per API response, de-duplicated and costed."""
    from pipelines.processors.usage import UsageProcessor
    from resources.pricing import PriceTable

    return _run_processor(context, state, UsageProcessor(PriceTable.load(state.settings().price_file)))


@dg.asset(partitions_def=projects_partitions, deps=[session_files],
          pool=POOL_MEMORY, group_name="sessions")
def memory_records(
    context: dg.AssetExecutionContext, state: StateResource, lance: LanceResource
) -> dg.MaterializeResult:
    """Lance ``records`` and ``edges``: every prompt and answer, searchable; one commit per table per run."""
    from pipelines.processors.memory import MemoryProcessor

    return _run_processor(context, state, MemoryProcessor(lance.store()))


@dg.asset(partitions_def=projects_partitions, deps=[session_files],
          pool=POOL_ARCHIVE, group_name="sessions")
def session_archive(
    context: dg.AssetExecutionContext, state: StateResource, packs: PackResource
) -> dg.MaterializeResult:
    """Content-addressed packs: every version of every session file, one pack per project per run."""
    from pipelines.processors.archive import ArchiveProcessor

    return _run_processor(context, state, ArchiveProcessor(packs.store()))


ingest_sessions = dg.define_asset_job(
    "ingest_sessions",
    selection=list(_INGEST_ASSETS),
    tags=WRITES_LANCE,
    description="Scan the sessions tree and run every processor (usage, memory, archive) on new and changed files.",
)


def project_fingerprints(sessions_dir: os.PathLike | str) -> dict[str, str]:
    """Per project, a digest of every file's (key, size, mtime_ns): stats only, no reads."""
    entries: dict[str, list[str]] = {}
    for f in walk_sessions(sessions_dir):
        entries.setdefault(f.project, []).append(f"{f.key}\0{f.size}\0{f.mtime_ns}")
    return {
        project: hashlib.blake2b("\n".join(lines).encode(), digest_size=12).hexdigest()
        for project, lines in entries.items()
    }


@dg.sensor(job=ingest_sessions, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def session_files_sensor(context: dg.SensorEvaluationContext, state: StateResource) -> dg.SensorResult:
    """Request ingestion for projects with new or changed files, or with failed files due for a retry;
    register new projects as partitions.

    At most ``sensor_max_new_partitions`` new projects are registered per tick (the rest next tick).
    More than `BACKFILL_ABOVE_PROJECTS` changed projects become one backfill, batched per run.
    """
    settings = state.settings()
    previous = json.loads(context.cursor) if context.cursor else {}
    current = project_fingerprints(settings.sessions_dir)
    known = set(context.instance.get_dynamic_partitions(projects_partitions.name))
    new_projects = sorted(p for p in current if p not in known)[: settings.sensor_max_new_partitions]
    ready = known | set(new_projects)
    changed = sorted(p for p, fp in current.items() if p in ready and previous.get(p) != fp)
    cursor = {p: fp for p, fp in current.items() if p in ready}
    retries = {p: token for p, token in due_retries(settings.retry_dir).items() if p in ready and p not in changed}
    requests = [dg.RunRequest(run_key=f"{p}:retry:{token}", partition_key=p) for p, token in sorted(retries.items())]
    if len(changed) > BACKFILL_ABOVE_PROJECTS:
        subset = AssetGraphSubset.from_asset_partition_set(
            {AssetKeyPartitionKey(dg.AssetKey(a), p) for a in _INGEST_ASSETS for p in changed},
            context.repository_def.asset_graph,
        )
        requests.append(dg.RunRequest.for_asset_graph_subset(subset, tags=WRITES_LANCE))
    else:
        requests += [dg.RunRequest(run_key=f"{p}:{current[p]}", partition_key=p) for p in changed]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[projects_partitions.build_add_request(new_projects)] if new_projects else [],
        cursor=json.dumps(cursor, sort_keys=True),
        skip_reason=None if requests else f"no changes in {len(current)} project(s)",
    )


defs = dg.Definitions(assets=[session_files, usage_messages, memory_records, session_archive],
                      jobs=[ingest_sessions], sensors=[session_files_sensor])
