"""What each session asset holds for a project after a run, as metadata the UI can plot.

Run counters (files scanned, bytes read) say what a run did; these say what the asset holds: tokens and
cost, records, archived versions and bytes. Names carry their unit (``_usd``, ``_bytes``, ``_tokens``), and
``dagster/row_count`` is the asset's rows for the project. The numbers come from `resources/`; this
module only labels them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from resources.usage.summary import project_summaries, warehouse_summary, week_tables

_USAGE_INTS = ("responses", "sessions", "input_tokens", "output_tokens", "cache_creation_tokens",
               "cache_read_tokens", "extra_output_tokens", "total_tokens")
_ARCHIVE_INTS = ("sessions", "versions", "version_bytes", "live_packs", "pack_bytes", "objects", "stored_bytes")


def _usage_values(summary: dict) -> dict[str, dg.MetadataValue]:
    values = {name: dg.MetadataValue.int(summary[name]) for name in _USAGE_INTS}
    values["cost_usd"] = dg.MetadataValue.float(summary["cost_usd"])
    for name in ("first_activity", "last_activity"):
        if summary[name] is not None:
            values[name] = dg.MetadataValue.timestamp(summary[name])
    values["dagster/row_count"] = dg.MetadataValue.int(summary["responses"])
    return values


def usage_holdings(conn, projects: Sequence[str]) -> dict[str, dict[str, dg.MetadataValue]]:
    """Per project: responses, sessions, token counts, ``cost_usd`` (as ``sessionlake usage`` reports it) and
    the first and last response's time."""
    summaries = project_summaries(conn, projects)
    return {p: _usage_values(summaries[p]) for p in projects if p in summaries}


def memory_holdings(counts: dict[str, int], projects: Sequence[str]) -> dict[str, dict[str, dg.MetadataValue]]:
    """Per project: the ``records`` rows it holds (``counts`` from `records_per_project`)."""
    return {p: {"records": dg.MetadataValue.int(counts.get(p, 0)),
                "dagster/row_count": dg.MetadataValue.int(counts.get(p, 0))} for p in projects}


def archive_holdings(stats: dict[str, dict]) -> dict[str, dict[str, dg.MetadataValue]]:
    """Per project: sessions, versions and their bytes, live packs and their bytes, and the dedup and
    compression ratios (``stats`` from `PackStore.repos_stats`)."""
    return {p: {**{name: dg.MetadataValue.int(s[name]) for name in _ARCHIVE_INTS},
                "dedup_ratio": dg.MetadataValue.float(s["dedup_ratio"]),
                "compression_ratio": dg.MetadataValue.float(s["compression_ratio"]),
                "dagster/row_count": dg.MetadataValue.int(s["versions"])} for p, s in stats.items()}


def usage_totals(conn, now: datetime | None = None) -> dict[str, dg.MetadataValue]:
    """The whole warehouse: totals, and this week's tokens and cost by project and by model (Markdown)."""
    now = now or datetime.now(UTC)
    summary = warehouse_summary(conn)
    tables = week_tables(conn, now.date())
    return {**_usage_values(summary), "projects": dg.MetadataValue.int(summary["projects"]),
            "week_by_project": dg.MetadataValue.md(tables["by_project"]),
            "week_by_model": dg.MetadataValue.md(tables["by_model"])}
