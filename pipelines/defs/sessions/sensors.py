"""The session_files_sensor.

It keeps one digest of (path, size, mtime_ns) per project in the sensors' state database
(`resources.state.sensor_state`, a file apart from the warehouse), saved once the run asked for that
project succeeded (a failed one's projects are asked for again); its cursor is only
``<generation>:<digest>`` of that state. It registers new projects as partitions itself (before
anything else, so a failing request can never hold registration back), and asks for one run per tick
covering every changed project."""

import hashlib
import time

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG

from pipelines.defs.partitions import projects_partitions, projects_run_request
from pipelines.defs.resources import StateResource
from pipelines.defs.run_targets import targets_any
from pipelines.defs.sessions.assets import INGEST_ASSETS, JOB_NAME, STEP_NAME
from pipelines.defs.sessions.checks import FRESHNESS_INTERVALS, freshness_results
from pipelines.defs.sessions.jobs import ingest_sessions
from pipelines.defs.tags import PROCESSOR_ASSETS
from pipelines.instance.home import missing_settings_message
from pipelines.instance.run_recovery import reap_dead_runs
from resources.config.settings import Settings
from resources.ingest.retry_marks import due_retries
from resources.ingest.session_files import project_fingerprints
from resources.sources import found_sources, walk_all
from resources.state.sensor_state import SensorState, load_state, save_state, sensor_store
from resources.state.store import is_lock_conflict

SENSOR_NAME = "session_files_sensor"

NOT_STARTED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]


def partition_run_request(order: list[str], projects: list[str], run_key: str | None = None,
                          tags: dict[str, str] | None = None) -> dg.RunRequest:
    """One ingest run request for ``projects`` (see `projects_run_request`)."""
    return projects_run_request(STEP_NAME, order, projects, run_key=run_key, tags=tags)


FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
MAX_FAILED_RUNS = 5
"""Runs in a row that may fail for a project before the sensor stops asking for it (until its files
change) and the ``ingest_runs_succeed`` check fails."""
BACKOFF_BASE_SEC = 60.0
"""After a project's second failed run in a row the sensor waits this long before asking again, doubling
with every further failure (the first failure is retried on the next tick)."""
BACKOFF_MAX_SEC = 3600.0
RECENT_RUNS = 200
"""Finished ingest runs read to count each project's failures in a row."""
LAUNCH_GRACE_SEC = 600.0
"""A requested run the instance does not show after this long is asked for again."""
RUNS_CHECK = "ingest_runs_succeed"


def _run_projects(run: dg.DagsterRun) -> list[str]:
    config = (run.run_config or {}).get("ops", {}).get(STEP_NAME, {}).get("config", {})
    projects = config.get("projects") if isinstance(config, dict) else None
    if projects:
        return list(projects)
    partition = run.tags.get("dagster/partition")
    return [partition] if partition else []


def failure_streaks(instance: dg.DagsterInstance) -> dict[str, tuple[int, float]]:
    """Per project, ``(failed runs in a row, end time of the last one)`` over the latest finished
    ingest_sessions runs, whoever launched them: a succeeded run that covered the project ends its streak."""
    streaks: dict[str, tuple[int, float]] = {}
    settled: set[str] = set()
    records = instance.get_run_records(dg.RunsFilter(job_name=JOB_NAME, statuses=FINISHED), limit=RECENT_RUNS)
    for record in records:  # newest first
        succeeded = record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        for project in _run_projects(record.dagster_run):
            if project in settled:
                continue
            if succeeded:
                settled.add(project)
                continue
            count, last = streaks.get(project, (0, 0.0))
            streaks[project] = (count + 1, last or (record.end_time or record.update_timestamp.timestamp()))
    return streaks


def backoff_sec(failures: int) -> float:
    """How long after its last failed run a project is asked for again."""
    return 0.0 if failures <= 1 else min(BACKOFF_BASE_SEC * 2 ** (failures - 2), BACKOFF_MAX_SEC)


def _settle_requested(instance: dg.DagsterInstance, state: SensorState, now: float) -> dict[str, str]:
    """Fold finished requested runs into the state: a succeeded run's fingerprints become the ingested
    ones, a failed or cancelled run's are dropped (so its projects are pending again). Returns the
    projects still in flight, with the fingerprint they were asked for at."""
    in_flight: dict[str, str] = {}
    for run_key, entry in list(state.requested.items()):
        runs = instance.get_runs(dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
        if not runs:
            if now - float(entry.get("at", 0)) > LAUNCH_GRACE_SEC:
                del state.requested[run_key]
            else:
                in_flight.update(entry.get("projects", {}))
            continue
        status = runs[0].status
        if status == dg.DagsterRunStatus.SUCCESS:
            state.digests.update(entry.get("projects", {}))
        elif status not in FINISHED:
            in_flight.update(entry.get("projects", {}))
            continue
        del state.requested[run_key]
    return in_flight


def _runs_check(failing: dict[str, int]) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("session_files"), check_name=RUNS_CHECK, passed=not failing,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{len(failing)} project(s) failed {MAX_FAILED_RUNS} or more ingest runs in a row and are not "
                     "asked for again until their files change: " + ", ".join(sorted(failing))
                     + "; see the runs' logs, then run `sessionlake ingest`") if failing
        else "every project's latest ingest run succeeded or is being retried",
        metadata={"failing_projects": dg.MetadataValue.int(len(failing))})


@dg.asset_check(asset="session_files", name=RUNS_CHECK,
                description=f"No project has failed {MAX_FAILED_RUNS} ingest_sessions runs in a row (the sensor "
                            "stops asking for such a project until its files change).")
def ingest_runs_succeed(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    failing = {p: n for p, (n, _) in failure_streaks(context.instance).items() if n >= MAX_FAILED_RUNS}
    evaluation = _runs_check(failing)
    return dg.AssetCheckResult(passed=evaluation.passed, severity=evaluation.severity,
                               description=evaluation.description, metadata=evaluation.metadata)


def session_files_sensor(settings: Settings) -> dg.SensorDefinition:
    """The ``session_files_sensor``, ticking every ``settings.sensor_interval_sec``."""
    every = settings.sensor_interval_sec
    return dg.sensor(
        name=SENSOR_NAME, job=ingest_sessions, minimum_interval_seconds=every,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Every {every} s (SESSIONLAKE_SENSOR_INTERVAL_SEC): registers new projects as partitions "
                    "and asks for one ingest_sessions run for every project with new or changed files, failed "
                    "files due for a retry, or a failed run; while a run is still queued, changes wait for the "
                    "next one.",
    )(session_files_tick)


def session_files_tick(context: dg.SensorEvaluationContext, state: StateResource) -> dg.SensorResult:
    """Ingest projects with new or changed files, or with failed files due for a retry: one run per tick.

    New projects are registered as partitions first (at most ``SESSIONLAKE_SENSOR_MAX_NEW_PARTITIONS``
    per tick, the rest next tick). While an ingest run is still waiting to start, changes wait for it
    to start and go into the next run (never dropped, never a backlog). Dead runs are reaped every tick.

    A project counts as ingested at a fingerprint once the run asked for it succeeded: a failed,
    killed or cancelled run's projects are asked for again on the next tick, then with a back-off
    (`backoff_sec`); after `MAX_FAILED_RUNS` failures in a row a project waits for its files to change
    and the ``ingest_runs_succeed`` check fails naming it.

    That state is in the sensors' own database (`resources.state.sensor_state`), which no run or report
    holds; the cursor names its generation. A cursor reset in the UI starts from an empty state: every
    project is asked for once.
    """
    settings = state.settings()
    instance = context.instance
    now = time.time()
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
    current = project_fingerprints(walk_all(sources))
    known = set(instance.get_dynamic_partitions(projects_partitions.name))
    new_projects = sorted(p for p in current if p not in known)[: settings.sensor_max_new_partitions]
    if new_projects:
        instance.add_dynamic_partitions(projects_partitions.name, new_projects)
    store = sensor_store(settings)
    busy = dg.SensorResult(skip_reason=f"{store.path} is held by another evaluation; the next tick checks again",
                           cursor=context.cursor)
    try:
        with store.connect() as conn:
            stored, found = load_state(conn, SENSOR_NAME, context.cursor)
    except Exception as exc:
        if is_lock_conflict(exc):
            return busy
        raise
    if found == "empty" and context.cursor:
        context.log.warning(f"cursor {context.cursor!r} names no stored state: every project is asked for once")
    loaded = stored.digest()
    in_flight = _settle_requested(instance, stored, now)
    ready = known | set(new_projects)
    previous = stored.digests
    changed = {p for p, fp in current.items()
               if p in ready and previous.get(p) != fp and in_flight.get(p) != fp}
    retries = {p: token for p, token in due_retries(settings.retry_dir).items() if p in ready}
    pending = changed | set(retries)
    streaks = failure_streaks(instance) if pending or stored.gave_up else {}
    gave_up = {p: fp for p, fp in stored.gave_up.items() if streaks.get(p, (0, 0))[0] >= MAX_FAILED_RUNS}
    backing_off = set()
    for p in sorted(pending):
        failures, last = streaks.get(p, (0, 0.0))
        fingerprint = current.get(p, "")
        if failures >= MAX_FAILED_RUNS:
            if gave_up.get(p, fingerprint) == fingerprint:
                backing_off.add(p)
            gave_up[p] = fingerprint  # files changed since it gave up: one more run
        elif failures and now < last + backoff_sec(failures):
            backing_off.add(p)
    pending = sorted(pending - backing_off)
    events = []
    if sorted(gave_up) != sorted(stored.gave_up):
        events.append(_runs_check({p: streaks[p][0] for p in gave_up}))
    stored.gave_up = gave_up
    stored.digests = {p: fp for p, fp in previous.items() if p in current}

    def result(**kwargs) -> dg.SensorResult:
        cursor = context.cursor
        if found != "stored" or stored.digest() != loaded:
            try:
                with store.connect() as conn:
                    cursor = save_state(conn, SENSOR_NAME, stored)
            except Exception as exc:
                if is_lock_conflict(exc):
                    return busy  # nothing saved and nothing requested: the next tick does both
                raise
        return dg.SensorResult(cursor=cursor, asset_events=events, **kwargs)

    if not pending:
        waits = f"; {len(backing_off)} failing project(s) wait (back-off or files unchanged)" if backing_off else ""
        running = f"; {len(in_flight)} in a run not yet finished" if in_flight else ""
        return result(skip_reason=f"no changes in {len(current)} project(s){running}{waits}"
                      + (f"; warning: {unsafe}" if unsafe else ""))
    waiting = [r for r in instance.get_runs(dg.RunsFilter(statuses=NOT_STARTED), limit=50)
               if targets_any(r, context.repository_def, INGEST_ASSETS)]  # a queued UI backfill counts too
    if waiting:
        return result(skip_reason=f"{len(pending)} project(s) changed; they go into the next run once run "
                                  f"{waiting[0].run_id[:8]} ({waiting[0].status.value}) has started")
    marks = [f"{p}\0{current.get(p, '')}\0{retries.get(p, '')}\0{streaks.get(p, (0, 0))[0]}" for p in pending]
    run_key = "ingest:" + hashlib.blake2b("\n".join(marks).encode(), digest_size=12).hexdigest()
    order = instance.get_dynamic_partitions(projects_partitions.name)
    request = partition_run_request(order, pending, run_key=run_key)
    retried = sum(1 for p in pending if p in retries or p in streaks)
    context.log.info(f"requesting one run for {len(pending)} project(s) ({retried} retried)")
    stored.requested[run_key] = {"at": now, "projects": {p: current[p] for p in pending if p in current}}
    return result(run_requests=[request])


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
    store = state.store(tick=True)  # a held warehouse is waited for briefly, then the tick skips
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
