"""The pack_gc job: consolidated_packs, in the ingest pool."""

import dagster as dg

from pipelines.defs.archive.assets import consolidated_packs

pack_gc = dg.define_asset_job(
    "pack_gc",
    selection=[consolidated_packs],
    description="Consolidate a project's packs into one (pack GC), sweep tombstones past the grace period, verify.",
)
