"""The lance_maintenance job: lance_storage, then the storage checks."""

import dagster as dg

from pipelines.defs.lance.assets import JOB_NAME, lance_storage
from pipelines.defs.lance.checks import events_checks, memory_checks

lance_maintenance = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.assets(lance_storage) | dg.AssetSelection.checks(*memory_checks, *events_checks),
    description="Compact the Lance tables, update indexes, prune old versions; then check their health.",
)
