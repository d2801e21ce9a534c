"""Partitions shared by the session assets: one dynamic partition per project (top-level folder)."""

import dagster as dg

projects_partitions = dg.DynamicPartitionsDefinition(name="projects")
