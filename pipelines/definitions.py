"""The one Definitions object of the sessionlake code location.

Each pipelines module exposes ``defs`` (assets, checks, jobs, sensors, schedules); this module merges
them and binds the storage resources. Every resource reads its paths from the environment
(``SESSIONLAKE_HOME``, ``SESSIONLAKE_SESSIONS_DIR``; see resources/settings.py).
"""

import dagster as dg

from pipelines import capture, maintenance, packs, sessions
from resources.configurable import CaptureQueueResource, LanceResource, PackResource, StateResource

defs = dg.Definitions.merge(
    sessions.defs,
    capture.defs,
    packs.defs,
    maintenance.defs,
    dg.Definitions(
        resources={
            "state": StateResource(),
            "lance": LanceResource(),
            "packs": PackResource(),
            "capture_queue": CaptureQueueResource(),
        }
    ),
)
