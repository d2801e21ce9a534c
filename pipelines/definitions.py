"""The one Definitions object of the sessionlake code location.

Each pipelines module exposes ``defs`` (assets, checks, jobs, sensors, schedules); this module merges
them and binds the storage resources. Every resource reads its paths from the environment
(``SESSIONLAKE_HOME``, ``SESSIONLAKE_SESSIONS_DIR``; see resources/config/settings.py).
"""

import dagster as dg

from pipelines.defs.archive import definitions as archive
from pipelines.defs.capture import definitions as capture
from pipelines.defs.lance import definitions as lance
from pipelines.defs.resources import CaptureQueueResource, LanceResource, PackResource, StateResource, TeamResource
from pipelines.defs.sessions import definitions as sessions
from pipelines.defs.team import definitions as team

defs = dg.Definitions.merge(
    sessions.defs,
    capture.defs,
    archive.defs,
    lance.defs,
    team.defs,
    dg.Definitions(
        # Every job without an executor of its own runs its steps in the run's process, above all the
        # implicit asset job that UI materializations and GraphQL/UI backfills run as: without this, a
        # backfill of the session assets ran multiprocess (one subprocess per step, seconds each).
        executor=dg.in_process_executor,
        resources={
            "state": StateResource(),
            "lance": LanceResource(),
            "packs": PackResource(),
            "capture_queue": CaptureQueueResource(),
            "team": TeamResource(),
        }
    ),
)
