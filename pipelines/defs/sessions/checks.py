"""The files_fresh checks: every processor asset is caught up with the files on disk.

A processor asset fails its check (WARN) when a file changed more than `FRESHNESS_INTERVALS` sensor intervals
ago and that processor has still not read it at its current size and mtime: the sensor missed it, its runs
keep failing, or no daemon runs. The check is evaluated by the ingest step when a run selects it (a UI
backfill does), and between runs by `session_freshness_sensor`, without a run.
"""

from __future__ import annotations

import time

import dagster as dg

from pipelines.defs.tags import PROCESSOR_ASSETS
from resources.config.settings import Settings
from resources.ingest.freshness import stale_files
from resources.ingest.session_files import SessionFile
from resources.state.store import StateStore

FRESH_CHECK = "files_fresh"
FRESHNESS_INTERVALS = 5
"""A file is overdue once this many sensor intervals passed since it changed."""
MAX_ROWS = 20

FRESH_CHECK_SPECS = [
    dg.AssetCheckSpec(FRESH_CHECK, asset=asset,
                      description=f"No file changed more than {FRESHNESS_INTERVALS} session-sensor intervals ago is "
                                  f"still unread by the {name} processor (WARN, with the projects behind).")
    for name, asset in PROCESSOR_ASSETS.items()
]


def freshness_results(settings: Settings, state: StateStore, files: list[SessionFile], processors: list[str],
                      now: float | None = None) -> list[dg.AssetCheckEvaluation]:
    """One `files_fresh` evaluation per processor in ``processors``, over ``files``."""
    cutoff = (now or time.time()) - FRESHNESS_INTERVALS * settings.sensor_interval_sec
    with state.connect() as conn:
        stale = stale_files(conn, processors, files, int(cutoff * 1e9))
    results = []
    for name in processors:
        behind = stale[name]
        metadata = {"projects_behind": dg.MetadataValue.int(len(behind)),
                    "files_behind": dg.MetadataValue.int(sum(behind.values())),
                    "files_checked": dg.MetadataValue.int(len(files))}
        if behind:
            rows = sorted(behind.items(), key=lambda kv: (-kv[1], kv[0]))
            metadata["behind"] = dg.MetadataValue.md("| project | files behind |\n|---|---:|\n" + "\n".join(
                f"| `{p}` | {n:,} |" for p, n in rows[:MAX_ROWS]))
        results.append(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(PROCESSOR_ASSETS[name]), check_name=FRESH_CHECK, passed=not behind,
            severity=dg.AssetCheckSeverity.WARN, metadata=metadata,
            description=(f"{sum(behind.values())} file(s) in {len(behind)} project(s) changed more than "
                         f"{FRESHNESS_INTERVALS} sensor intervals ago and are still unread" if behind else
                         f"caught up with {len(files)} file(s)")))
    return results
