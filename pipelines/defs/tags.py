"""Run tags, concurrency pools and asset names that several pipelines modules agree on."""

POOL_INGEST = "sessionlake_ingest"
"""The session ingest step and pack GC: one at a time, so archive writes and GC never overlap."""
POOL_CAPTURE = "sessionlake_capture"
"""The capture drain: its own pool, so a capture never waits behind an ingest run."""
POOL_LANCE_MAINTENANCE = "sessionlake_lance_maintenance"

QUEUE_TAG = "sessionlake/queue"
"""Run-queue lane (`pipelines/instance/dagster.yaml` limits each): ``ingest`` or ``capture``."""
PRIORITY_TAG = "dagster/priority"
LAUNCHED_BY_TAG = "sessionlake/launched-by"
"""Runs started by a command (``sessionlake ingest``) say so; the UI otherwise shows "Manually launched"."""

LANCE_ASSETS = frozenset({"memory_records", "capture_records", "team_sessions"})
"""Assets whose materialization commits to Lance tables: Lance maintenance waits for any run that
targets one of them, however the run was launched (sensor, CLI, UI backfill, GraphQL)."""

PROCESSOR_ASSETS = {"usage": "usage_messages", "memory": "memory_records", "archive": "session_archive"}
"""The asset each session processor writes."""
