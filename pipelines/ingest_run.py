"""Running ingest_sessions from Python or the CLI, recorded on the instance at DAGSTER_HOME.

All projects go into one run over the partition range, so the CLI pays Dagster's run overhead once;
the run and its materializations show in the UI like a sensor-started one.
"""

from __future__ import annotations

import math
import time

from pipelines.processors.runner import projects_with_work
from resources.retry_marks import due_retries
from resources.sessions import walk_sessions
from resources.settings import Settings
from resources.state import StateStore

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PROCESSOR_ASSETS = {"usage": "usage_messages", "memory": "memory_records", "archive": "session_archive"}
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""The run's full event log is on the instance (and in the UI); the terminal gets warnings and errors."""


def ingest(projects: list[str] | None = None, assets: list[str] | None = None,
           settings: Settings | None = None, everything: bool = False) -> dict:
    """Ingest ``projects`` (default: every project on disk) with ``session_files`` plus ``assets``
    (default: every processor asset).

    Only projects with something to do are run: a file some selected processor has not processed at
    its current size and mtime, or failed files awaiting a retry. ``everything`` runs them all.
    Returns ``{run_id, success, projects, up_to_date, elapsed_sec, assets: {asset: {metadata numbers}}}``.
    """
    import dagster as dg

    from pipelines.definitions import defs
    from pipelines.instance import prepare_dagster_home
    from pipelines.partitions import projects_partitions
    from pipelines.tags import WRITES_LANCE

    settings = settings or Settings.from_env()
    prepare_dagster_home(settings)
    started = time.perf_counter()
    files = list(walk_sessions(settings.sessions_dir))
    on_disk = sorted({f.project for f in files})
    wanted = sorted(set(projects) & set(on_disk)) if projects else on_disk
    assets = list(PROCESSOR_ASSETS.values()) if assets is None else assets
    if not everything:
        names = [name for name, asset in PROCESSOR_ASSETS.items() if asset in assets]
        chosen = set(wanted)
        todo = projects_with_work(names, [f for f in files if f.project in chosen], StateStore.from_settings(settings))
        todo |= set(due_retries(settings.retry_dir, now=math.inf))
        wanted = sorted(set(wanted) & todo)
    result = {"run_id": None, "success": True, "projects": wanted, "up_to_date": len(on_disk) - len(wanted),
              "assets": {}, "elapsed_sec": 0.0}
    if not wanted:
        result["elapsed_sec"] = time.perf_counter() - started
        return result
    with dg.DagsterInstance.get() as instance:
        known = instance.get_dynamic_partitions(projects_partitions.name)
        new = [p for p in on_disk if p not in set(known)]
        if new:
            instance.add_dynamic_partitions(projects_partitions.name, new)
        order = instance.get_dynamic_partitions(projects_partitions.name)
        selection = {dg.AssetKey("session_files"), *(dg.AssetKey(a) for a in assets)}
        job = defs.resolve_job_def("ingest_sessions").get_subset(asset_selection=selection)
        runs = _partition_ranges(order, set(wanted))
        for start, end in runs:
            tags = {**WRITES_LANCE, RANGE_START_TAG: start, RANGE_END_TAG: end}
            outcome = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False, run_config=QUIET)
            result["run_id"] = outcome.run_id
            result["success"] &= outcome.success
            for event in outcome.get_asset_materialization_events():
                mat = event.materialization
                numbers = {k: v.value for k, v in mat.metadata.items() if isinstance(v.value, int | float)}
                result["assets"].setdefault(mat.asset_key.to_user_string(), numbers)
    result["elapsed_sec"] = time.perf_counter() - started
    return result


def _partition_ranges(order: list[str], wanted: set[str]) -> list[tuple[str, str]]:
    """Contiguous runs of ``wanted`` keys in the instance's partition order, as (start, end) pairs."""
    ranges, start, prev = [], None, None
    for key in order:
        if key in wanted:
            start = start or key
            prev = key
        elif start is not None:
            ranges.append((start, prev))
            start = None
    if start is not None:
        ranges.append((start, prev))
    return ranges
