"""The ingest_sessions job: the session assets, run in process, in the `ingest` run-queue lane."""

import dagster as dg

from pipelines.defs.sessions.assets import CHECK_SPECS, INGEST_ASSETS, JOB_NAME
from pipelines.defs.tags import QUEUE_TAG

ingest_sessions = dg.define_asset_job(
    JOB_NAME,
    # The Lance storage-health checks on memory_records are table-wide and slow: maintenance runs them.
    selection=dg.AssetSelection.assets(*INGEST_ASSETS).without_checks()
    | dg.AssetSelection.checks(*(spec.key for spec in CHECK_SPECS)),
    tags={QUEUE_TAG: "ingest"},
    description="Scan the sessions tree and run every processor (usage, memory, archive) on new and changed "
                "files: one process, one step, one pass per run.",
)
