"""The team_manifest_sensor: one ingest_team run per tick that finds new manifests or new sync files."""

import hashlib
import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from pipelines.defs.resources import TeamResource
from pipelines.defs.team.assets import LOOKBACK_SEC, MANIFESTS_TAG, MAX_MANIFESTS_PER_RUN, TeamIngestConfig
from pipelines.defs.team.jobs import ingest_team


def _window_start(now: datetime) -> str:
    return f"manifests/{now - timedelta(seconds=LOOKBACK_SEC):%Y%m%dT%H%M%S%f}Z"


@dg.sensor(job=ingest_team, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 60 s: one ingest_team run for the manifests pushed and the usage files synced "
                       "since the last tick (run key = a digest of their names).")
def team_manifest_sensor(context: dg.SensorEvaluationContext, team: TeamResource) -> dg.SensorResult:
    """List manifests named within the lookback, and the sync files (``usage/``: few, as each machine
    compacts its own); request a run for those not requested before."""
    from resources.sync.files import PREFIX as SYNC_PREFIX
    from resources.team.manifests import list_manifest_names

    location = team.central_location()
    if location is None:
        return dg.SensorResult(skip_reason="not a team's central deployment: SESSIONLAKE_TEAM_URI is unset or "
                                           "SESSIONLAKE_STORAGE_URI differs from it")
    start = _window_start(datetime.now(UTC))
    previous = json.loads(context.cursor) if context.cursor else {}
    seen, synced = set(previous.get("seen", [])), set(previous.get("sync", []))
    blobs = location.blobs()
    listed = list(list_manifest_names(blobs, start_after=start))
    new = [n for n in listed if n not in seen][:MAX_MANIFESTS_PER_RUN]
    sync_files = sorted(b.name for b in blobs.list(SYNC_PREFIX))
    new_sync = [n for n in sync_files if n not in synced]
    cursor = json.dumps({"seen": sorted(n for n in listed if n in seen or n in new), "sync": sync_files})
    if not new and not new_sync:
        return dg.SensorResult(cursor=cursor, skip_reason=f"no new manifests ({len(listed)} in the last "
                                                          f"{LOOKBACK_SEC} s, all requested) or sync files")
    digest = hashlib.sha256("\n".join(new + new_sync).encode()).hexdigest()[:16]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=f"team:{digest}", tags={MANIFESTS_TAG: str(len(new))},
            run_config=dg.RunConfig(ops={"team_sessions": TeamIngestConfig(manifests=new)}))],
        cursor=cursor,
    )
