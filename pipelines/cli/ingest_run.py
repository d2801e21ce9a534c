"""Running ingest_sessions from Python or the CLI, recorded on the instance at DAGSTER_HOME.

Whatever set of projects has work, it is one in-process run (one process, one step), so the CLI
pays Dagster's run overhead once; the run and its per-project materializations show in the UI like
a sensor-started one. Before the run claims its pool slot, runs whose process died are marked
failed and their slots freed, and a slot held by a live run is waited for (bounded, interruptible,
saying which run holds it).
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager

from pipelines.cli.projects import resolve_projects
from resources.config.settings import Settings
from resources.ingest.fewer_collections import collections_paused, fewer_collections
from resources.ingest.plan import files_with_work
from resources.ingest.retry_marks import due_retries
from resources.sources import found_sources, walk_all
from resources.state.store import StateStore

DEBUG_LOG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""With ``--debug``: Dagster's console logger, warnings and errors with their tracebacks. Otherwise the run
logs to the terminal through `pipelines.cli.run_log.TerminalLog` (a few lines); its full event log is on
the instance (and in the UI)."""

HELD_BACK_LOG = "logs/ingest.log"
"""Under the data home: what else the last run printed or logged (a library's warnings), held back from the
terminal without ``--debug`` (`pipelines.cli.run_log.held_back`)."""


class SessionsNotFound(RuntimeError):
    """The sessions tree to ingest is not there (named by the user and missing, or no data at the default)."""


def _found_sources(settings: Settings) -> list:
    """The sources to read; `SessionsNotFound` when the Claude Code folder the user named is missing,
    or when no agent's folder exists at all."""
    root = settings.sessions_dir
    if settings.sessions_dir_explicit and not root.is_dir():
        raise SessionsNotFound(f"SESSIONLAKE_SESSIONS_DIR={root} does not exist (or is not a directory)")
    sources = found_sources(settings)
    if not sources:
        looked = "; ".join(f"{agent}: {path}" for agent, path in settings.agent_roots().items())
        raise SessionsNotFound(f"no session data found: looked in {looked} (the agents' defaults); "
                               "set SESSIONLAKE_SESSIONS_DIR (Claude Code) or SESSIONLAKE_<AGENT>_DIR to the "
                               "folder that holds your sessions")
    return sources


def _step_failure(outcome) -> str | None:
    """The first line of the run's step failure, or None. Raises `EnvironmentFailure` naming the run when
    the step failed for the environment's sake (a full disk, a lost server), so the command ends in that
    one line."""
    from resources.environment import EnvironmentFailure, environment_failure_in

    for event in outcome.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            line = environment_failure_in(error)
            if line:
                raise EnvironmentFailure(f"run {outcome.run_id} failed: {line}")
            while error.cause is not None and "Error occurred while executing" in error.message:
                error = error.cause  # Dagster's wrapper: the user's error is its cause
            return f"{error.cls_name}: {(error.message.strip().splitlines() or [''])[0][:300]}"
    return None


def _reap_dead_runs() -> None:
    from pipelines.instance.home import open_instance
    from pipelines.instance.run_recovery import reap_dead_runs

    with open_instance() as instance:
        reap_dead_runs(instance)


@contextmanager
def _sigterm_interrupts():
    """SIGTERM interrupts like Ctrl-C for the duration (a wait for a slot must end on either)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ingest(projects: list[str] | None = None, assets: list[str] | None = None,
           settings: Settings | None = None, everything: bool = False, say=print, debug: bool = False) -> dict:
    """Ingest ``projects`` (default: every project on disk) with ``session_files`` plus ``assets``
    (default: every processor asset), in one run.

    Only projects with something to do are run: a file some selected processor has not processed at
    its current size and mtime, or failed files awaiting a retry. ``everything`` runs them all and hashes
    every file, so a same-size rewrite whose mtime was put back is read again. The files new to usage and
    memory are read in a worker process while Dagster starts, and the run takes those reads
    (`resources.ingest.prefetch`). The run's warnings reach
    stderr as a few lines (`TerminalLog`), or, with ``debug``, through Dagster's console logger.
    With nothing to run it still asks the instance (`started_runs`, no Dagster import): its server must
    answer, and a run left STARTED by a lost process or server is marked failed.
    Returns ``{run_id, success, projects, up_to_date, elapsed_sec, errors, error, assets: {asset: totals},
    failures: {asset: markdown table}}`` (``error``: the first line of a failed step's error).
    Raises `SessionsNotFound` when there is nothing to read,
    `pipelines.cli.projects.UnknownProject` when one of ``projects`` is not on disk, and
    `pipelines.instance.home.InstanceConfigError` when the Dagster instance cannot be opened or does not
    answer (with nothing to run, one query through `started_runs`, without importing Dagster).
    """
    from pipelines.defs.tags import PROCESSOR_ASSETS

    settings = settings or Settings.from_env()
    sources = _found_sources(settings)
    started = time.perf_counter()
    files = list(walk_all(sources))
    on_disk = sorted({f.project for f in files})
    wanted = sorted(resolve_projects(projects, on_disk, "sessions")) if projects else on_disk
    assets = list(PROCESSOR_ASSETS.values()) if assets is None else assets
    names = [name for name, asset in PROCESSOR_ASSETS.items() if asset in assets]
    chosen = set(wanted)
    work = files_with_work(names, [f for f in files if f.project in chosen], StateStore.from_settings(settings))
    if not everything:
        todo = {f.project for unstable in work.values() for f in unstable}
        todo |= set(due_retries(settings.retry_dir, now=math.inf))
        wanted = sorted(set(wanted) & todo)
    result = {"run_id": None, "success": True, "agents": [s.agent for s in sources], "projects": wanted,
              "up_to_date": len(on_disk) - len(wanted),
              "assets": {}, "failures": {}, "errors": 0, "error": None, "elapsed_sec": 0.0}
    if not wanted:  # still ask the instance: it must answer, and a run it lost is marked failed now
        from pipelines.instance.home import prepare_dagster_home, started_runs

        if started_runs(prepare_dagster_home(settings)):
            _reap_dead_runs()
        result["elapsed_sec"] = time.perf_counter() - started
        return result
    # Dagster's imports, its instance and the run's start allocate enough for Python's collector to take ~0.8 s
    # of CPU, as many rows would; the new files are read in a worker process (on the other core) meanwhile
    with fewer_collections(), _reads_ahead(names, work, settings) as prefetch:
        outcome, terminal = _execute(settings, assets, on_disk, wanted, everything, say, debug, prefetch)
    result["run_id"] = outcome.run_id
    result["success"] = outcome.success
    if terminal is not None and terminal.summary(outcome.run_id):
        say(terminal.summary(outcome.run_id))
    if not outcome.success:
        result["error"] = _step_failure(outcome)
    # a partition the run changed is materialized (what it holds, and the run's counters); one it did not
    # change is observed (the run's counters only): the summary adds both up
    events = [e.materialization for e in outcome.get_asset_materialization_events()] + [
        e.asset_observation_data.asset_observation for e in outcome.get_asset_observation_events()]
    for event in events:
        totals = result["assets"].setdefault(event.asset_key.to_user_string(), {})
        for key, value in event.metadata.items():
            if isinstance(value.value, int | float) and not isinstance(value.value, bool) and "/" not in key:
                totals[key] = totals.get(key, 0) + value.value
    for evaluation in outcome.get_asset_check_evaluations():
        if not evaluation.passed:
            table = evaluation.metadata.get("failed_files")
            result["failures"][evaluation.asset_key.to_user_string()] = table.value if table else evaluation.description
            result["errors"] += int(evaluation.metadata["files_failed"].value)
    # the step reports the processors beside usage as they finish; the summary keeps one order
    order = ["session_files", *PROCESSOR_ASSETS.values()]
    for key in ("assets", "failures"):
        result[key] = dict(sorted(result[key].items(), key=lambda item: _position(order, item[0])))
    result["success"] = result["success"] and not result["errors"]
    result["elapsed_sec"] = time.perf_counter() - started
    return result


def _position(order: list[str], asset: str) -> int:
    return order.index(asset) if asset in order else len(order)


@contextmanager
def _reads_ahead(names: list[str], work: dict[str, list], settings: Settings):
    """Reads of the run's new files, started now for the processors that read in workers
    (`resources.ingest.prefetch`), or None; the worker ends on leaving. Memory's first: after its reads it has
    the most left to do in the run (its commits, then the full-text index), while usage only commits."""
    from resources.ingest.prefetch import start_prefetch
    from resources.ingest.runner import READ_AHEAD_MAX_BYTES, READ_AHEAD_MIN_BYTES

    types = []
    if "memory" in names:
        from resources.ingest.processors.memory import MemoryProcessor

        types.append(MemoryProcessor)
    if "usage" in names:
        from resources.ingest.processors.usage import UsageProcessor

        types.append(UsageProcessor)
    prefetch = start_prefetch(types, work, StateStore.from_settings(settings), READ_AHEAD_MIN_BYTES,
                              READ_AHEAD_MAX_BYTES, prices_for="usage")
    try:
        yield prefetch
    finally:
        if prefetch is not None:
            prefetch.close()


def _execute(settings: Settings, assets: list[str], on_disk: list[str], wanted: list[str], everything: bool, say,
             debug: bool, prefetch):
    """The run of `ingest` over ``wanted`` on the instance (``prefetch``: its files read ahead, or None): its
    outcome, and the terminal log that held its output back (None with ``debug``)."""
    # the Dagster home (its dagster.yaml read and checked) and Dagster itself (about 1 s to import) only now
    # that there is a run to make
    from pipelines.instance.home import open_instance, prepare_dagster_home

    with collections_paused():  # about a million objects, all alive after: no young collection walks them
        prepare_dagster_home(settings)
        import dagster as dg

        from pipelines.cli.run_log import held_back
        from pipelines.definitions import defs
        from pipelines.defs.partitions import projects_partitions
        from pipelines.defs.sessions.assets import FILES_CHECK, JOB_NAME, STEP_NAME
        from pipelines.defs.sessions.sensors import partition_run_request
        from pipelines.defs.tags import LAUNCHED_BY_TAG, POOL_INGEST
        from pipelines.instance.compute_logs import captured_at_end
        from pipelines.instance.run_recovery import process_tags, wait_for_pool

        instance = open_instance()
    with instance, _sigterm_interrupts():
        known = set(instance.get_dynamic_partitions(projects_partitions.name))
        new = [p for p in on_disk if p not in known]
        if new:
            instance.add_dynamic_partitions(projects_partitions.name, new)
        order = instance.get_dynamic_partitions(projects_partitions.name)
        request = partition_run_request(order, wanted)
        selection = {dg.AssetKey("session_files"), *(dg.AssetKey(a) for a in assets)}
        checks = {dg.AssetCheckKey(dg.AssetKey(a), FILES_CHECK) for a in assets}
        job = defs.resolve_job_def(JOB_NAME).get_subset(asset_selection=selection, asset_check_selection=checks)
        wait_for_pool(instance, POOL_INGEST, settings.pool_wait_sec, say)
        # tagged before the step claims its slot: no window to die in
        tags = {**request.tags, **process_tags(), LAUNCHED_BY_TAG: "sessionlake ingest"}
        if request.partition_key:
            tags["dagster/partition"] = request.partition_key
        step_config = {**request.run_config["ops"][STEP_NAME]["config"], "verify_content": everything}
        run_config = {**request.run_config, "ops": {STEP_NAME: {"config": step_config}}}
        terminal = None
        resources = {"prefetch": dg.ResourceDefinition.hardcoded_resource(prefetch)}  # what was read ahead
        if debug:
            run_config.update(DEBUG_LOG)
            outcome = job.execute_in_process(instance=instance, tags=tags, run_config=run_config,
                                             raise_on_error=False, resources=resources)
        else:
            run_config["loggers"] = {"console": {}}  # a job's loggers log only when configured
            # the run's output is held back until it ends: copied there at the end, without Dagster's mirror processes
            with held_back(settings.home / HELD_BACK_LOG) as terminal, captured_at_end(instance):
                outcome = job.with_logger_defs(terminal.logger_defs()).execute_in_process(
                    instance=instance, tags=tags, run_config=run_config, raise_on_error=False, resources=resources)
    return outcome, terminal
