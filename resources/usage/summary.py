"""What the usage warehouse holds, summed for people who look at it outside a report: per project, in
total, and this week by project and by model (as Markdown tables).

Cost is what ``sessionlake usage`` reports by default (cost mode ``auto``), summed as exact decimals,
so the same warehouse always gives the same figure.
"""

from __future__ import annotations

from datetime import date, timedelta

import duckdb

from resources.usage.report_query import COST_SQL, EXACT_COST, ReportFilter
from resources.usage.reports import usage_report

_SUMS = f"""count(*), sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens), sum(cache_read_tokens),
            sum(extra_output_tokens), sum(CAST({COST_SQL['auto']} AS {EXACT_COST})),
            count(DISTINCT coalesce(session_id, session_key)), min(ts), max(ts)"""
FIELDS = ("responses", "input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens",
          "extra_output_tokens", "cost_usd", "sessions", "first_activity", "last_activity")
WEEK_ROWS = 15
"""Rows of each week table; the rest are summed in one last row."""


def _summary(row: tuple) -> dict:
    out = dict(zip(FIELDS, row, strict=True))
    for name in FIELDS[:6] + ("sessions",):
        out[name] = int(out[name] or 0)
    out["cost_usd"] = round(float(out["cost_usd"] or 0), 6)
    out["total_tokens"] = sum(out[n] for n in FIELDS[1:6])
    return out


def project_summaries(conn: duckdb.DuckDBPyConnection, projects: list[str]) -> dict[str, dict]:
    """Per project of ``projects`` with usage rows: responses, token counts, ``total_tokens``, ``cost_usd``,
    ``sessions`` and the first and last response's time. Projects without rows are absent."""
    rows = conn.execute(
        f"SELECT project, {_SUMS} FROM usage_messages WHERE list_contains($projects, project) GROUP BY project",
        {"projects": list(projects)}).fetchall()
    return {row[0]: _summary(row[1:]) for row in rows}


def warehouse_summary(conn: duckdb.DuckDBPyConnection) -> dict:
    """The same numbers over the whole warehouse, plus the number of projects."""
    row = conn.execute(f"SELECT {_SUMS}, count(DISTINCT project) FROM usage_messages").fetchone()
    return {**_summary(row[:-1]), "projects": int(row[-1])}


def week_tables(conn: duckdb.DuckDBPyConnection, today: date, timezone: str = "UTC") -> dict[str, str]:
    """``{"by_project": md, "by_model": md}``: tokens and cost of the 7 days ending ``today``, highest cost
    first, as the ``project`` and ``model`` reports compute them."""
    flt = ReportFilter(since=today - timedelta(days=6), until=today, timezone=timezone)
    out = {}
    for kind, field, name in (("project", "project", "by_project"), ("model", "model", "by_model")):
        rows = usage_report(conn, kind, flt)[f"{kind}s"]
        out[name] = _markdown(field, rows)
    return out


def _markdown(field: str, rows: list[dict]) -> str:
    lines = [f"| {field} | responses | total tokens | cost (USD) |", "|---|---:|---:|---:|"]
    shown, rest = rows[:WEEK_ROWS], rows[WEEK_ROWS:]
    for r in shown:
        lines.append(f"| `{r[field]}` | {r['responses']:,} | {r['totalTokens']:,} | {r['totalCost']:,.2f} |")
    if rest:
        lines.append(f"| {len(rest)} more | {sum(r['responses'] for r in rest):,} | "
                     f"{sum(r['totalTokens'] for r in rest):,} | {sum(r['totalCost'] for r in rest):,.2f} |")
    if not rows:
        lines.append("| (no usage this week) | 0 | 0 | 0.00 |")
    return "\n".join(lines)
