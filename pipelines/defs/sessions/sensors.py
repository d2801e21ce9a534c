"""The session_files_sensor.

It reads no database: it keeps one digest of (path, size, mtime_ns) per project in its cursor, registers
new projects as partitions itself (before anything else, so a failing request can never hold registration
back), and asks for one run per tick covering every changed project."""

import hashlib
import json
from collections.abc import Iterable

import dagster as dg

from pipelines.defs.partitions import projects_partitions, projects_run_request
from pipelines.defs.resources import StateResource
from pipelines.defs.run_targets import targets_any
from pipelines.defs.sessions.assets import INGEST_ASSETS, STEP_NAME
from pipelines.defs.sessions.checks import FRESHNESS_INTERVALS, freshness_results
from pipelines.defs.sessions.jobs import ingest_sessions
from pipelines.defs.tags import PROCESSOR_ASSETS
from pipelines.instance.home import missing_settings_message
from pipelines.instance.run_recovery import reap_dead_runs
from resources.config.settings import Settings
from resources.ingest.retry_marks import due_retries
from resources.ingest.session_files import SessionFile
from resources.sources import found_sources, walk_all
from resources.state.store import is_lock_conflict

FRESHNESS_LOCK_WAIT_SEC = 10.0
"""The freshness tick waits at most this long for the warehouse, then skips (the next tick checks again)."""

NOT_STARTED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]


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
    """One ingest run request for ``projects`` (see `projects_run_request`)."""
    return projects_run_request(STEP_NAME, order, projects, run_key=run_key, tags=tags)


def _parse_cursor(raw: str | None) -> dict[str, str]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    digests = value.get("digests", {}) if isinstance(value, dict) else {}
    return digests if isinstance(digests, dict) else {}


def session_files_sensor(settings: Settings) -> dg.SensorDefinition:
    """The ``session_files_sensor``, ticking every ``settings.sensor_interval_sec``."""
    every = settings.sensor_interval_sec
    return dg.sensor(
        name="session_files_sensor", job=ingest_sessions, minimum_interval_seconds=every,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Every {every} s (SESSIONLAKE_SENSOR_INTERVAL_SEC): registers new projects as partitions "
                    "and asks for one ingest_sessions run for every project with new or changed files or failed "
                    "files due for a retry; while a run is still queued, changes wait for the next one.",
    )(session_files_tick)


def session_files_tick(context: dg.SensorEvaluationContext, state: StateResource) -> dg.SensorResult:
    """Ingest projects with new or changed files, or with failed files due for a retry: one run per tick.

    New projects are registered as partitions first (at most ``SESSIONLAKE_SENSOR_MAX_NEW_PARTITIONS``
    per tick, the rest next tick). While an ingest run is still waiting to start, changes wait for it
    to start and go into the next run (never dropped, never a backlog). Dead runs are reaped every tick.
    """
    settings = state.settings()
    instance = context.instance
    unsafe = missing_settings_message(instance)
    if unsafe:  # e.g. plain `dagster dev` on a new DAGSTER_HOME: runs would go unqueued and unmonitored
        context.log.warning(unsafe)
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
                               skip_reason=f"no changes in {len(current)} project(s)"
                               + (f"; warning: {unsafe}" if unsafe else ""))
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


def session_freshness_sensor(settings: Settings) -> dg.SensorDefinition:
    """The ``session_freshness_sensor``: evaluates every processor asset's files_fresh check without a run,
    every `FRESHNESS_INTERVALS` session-sensor intervals."""
    every = FRESHNESS_INTERVALS * settings.sensor_interval_sec
    return dg.sensor(
        name="session_freshness_sensor", minimum_interval_seconds=every,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Every {every} s: evaluates the files_fresh check of each processor asset (no run): WARN when "
                    f"a file changed more than {FRESHNESS_INTERVALS} session-sensor intervals ago is still unread.",
    )(session_freshness_tick)


def session_freshness_tick(context: dg.SensorEvaluationContext, state: StateResource) -> dg.SensorResult:
    """One files_fresh evaluation per processor asset, over every session file found (stats only)."""
    settings = state.settings()
    store = state.store()
    store.lock_wait_sec = FRESHNESS_LOCK_WAIT_SEC
    files = list(walk_all(found_sources(settings)))
    try:
        evaluations = freshness_results(settings, store, files, list(PROCESSOR_ASSETS))
    except Exception as exc:
        if is_lock_conflict(exc):
            return dg.SensorResult(skip_reason="the warehouse is busy; the next tick checks again")
        raise
    behind = [e.asset_key.to_user_string() for e in evaluations if not e.passed]
    context.log.info(f"files_fresh over {len(files)} file(s): " + (f"behind: {behind}" if behind else "caught up"))
    return dg.SensorResult(asset_events=evaluations)
