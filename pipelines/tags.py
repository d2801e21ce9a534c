"""Run tags and concurrency pools that several pipelines modules agree on."""

WRITES_LANCE_TAG = "sessionlake/writes-lance"
"""Set to "true" on every job that commits to Lance tables; the maintenance sensor waits for them."""
WRITES_LANCE = {WRITES_LANCE_TAG: "true"}

POOL_USAGE = "sessionlake_usage"
POOL_MEMORY = "sessionlake_memory"
POOL_ARCHIVE = "sessionlake_archive"
"""Archive writes and pack GC share this pool, so they never run at once."""
POOL_LANCE_MAINTENANCE = "sessionlake_lance_maintenance"
