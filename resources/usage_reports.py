"""Usage reports over the warehouse, shaped like ccusage's JSON so scripts written for it keep working.

Filters (since/until/project) and the time zone are applied in SQL; only aggregated rows (or, for
5-hour blocks, one small row per response in range) come back to Python.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import duckdb

from resources.pricing import COST_MODES, PriceTable
from resources.usage import sync_prices, unpriced_models

REPORTS = ("daily", "weekly", "monthly", "session", "project", "model", "branch", "blocks")
BLOCK_HOURS = 5

_PERIOD_SQL = {
    "daily": "strftime(timezone($tz, ts), '%Y-%m-%d')",
    "weekly": "strftime(date_trunc('week', timezone($tz, ts)), '%Y-%m-%d')",
    "monthly": "strftime(timezone($tz, ts), '%Y-%m')",
    "session": "coalesce(session_id, session_key)",
    "project": "project",
    "model": "coalesce(model, 'unknown')",
    "branch": "coalesce(git_branch, '(no branch)')",
}
# ccusage's top-level list name and period field name, per report.
_SHAPE = {
    "daily": ("daily", "date"),
    "weekly": ("weekly", "week"),
    "monthly": ("monthly", "month"),
    "session": ("sessions", "sessionId"),
    "project": ("projects", "project"),
    "model": ("models", "model"),
    "branch": ("branches", "gitBranch"),
}
_COST_SQL = {
    "auto": "coalesce(cost_usd, computed_cost_usd, 0)",
    "calculate": "coalesce(computed_cost_usd, 0)",
    "display": "coalesce(cost_usd, 0)",
}
_TOKEN_FIELDS = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens")


@dataclass(frozen=True)
class ReportFilter:
    since: date | None = None
    until: date | None = None
    timezone: str = "UTC"
    project: str | None = None
    mode: str = "auto"

    def where(self) -> tuple[str, dict]:
        if self.mode not in COST_MODES:
            raise ValueError(f"cost mode {self.mode!r}: expected one of {', '.join(COST_MODES)}")
        clauses, params = ["TRUE"], {"tz": self.timezone}
        if self.since:
            clauses.append("CAST(timezone($tz, ts) AS DATE) >= $since")
            params["since"] = self.since
        if self.until:
            clauses.append("CAST(timezone($tz, ts) AS DATE) <= $until")
            params["until"] = self.until
        if self.project:
            clauses.append("project = $project")
            params["project"] = self.project
        return " AND ".join(clauses), params


def usage_report(conn: duckdb.DuckDBPyConnection, kind: str, flt: ReportFilter | None = None,
                 prices: PriceTable | None = None) -> dict:
    """The report ``kind`` (one of `REPORTS`) as a ccusage-shaped dict with a ``totals`` object.

    With ``prices``, stored rows are re-costed first if that table differs from the one they were
    costed with. ``unpricedModels`` lists models that had tokens but no price (costed at 0).
    """
    flt = flt or ReportFilter()
    if prices is not None:
        sync_prices(conn, prices)
    if kind not in REPORTS:
        raise ValueError(f"unknown report {kind!r}: expected one of {', '.join(REPORTS)}")
    where, params = flt.where()
    try:  # an unknown zone would otherwise only fail once a row is converted, or never on an empty table
        _query(conn, "SELECT timezone($tz, TIMESTAMPTZ '2000-01-01 00:00:00+00')", params)
    except duckdb.Error as exc:
        raise ValueError(f"unknown time zone {flt.timezone!r}") from exc
    report = _blocks(conn, where, params, flt) if kind == "blocks" else _grouped(conn, kind, where, params, flt)
    report["totals"] = _totals(conn, where, params, flt.mode)
    report["unpricedModels"] = unpriced_models(conn, where, params)
    return report


def known_projects(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Every project with usage rows, sorted."""
    return [r[0] for r in conn.execute("SELECT DISTINCT project FROM usage_messages ORDER BY 1").fetchall()]


def _query(conn, sql: str, params: dict) -> list[tuple]:
    """Run ``sql`` with the named parameters it references (DuckDB rejects unused ones)."""
    return conn.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql}).fetchall()


def _grouped(conn, kind: str, where: str, params: dict, flt: ReportFilter) -> dict:
    period = _PERIOD_SQL[kind]
    rows = _query(
        conn,
        f"""SELECT {period} AS period, coalesce(model, 'unknown') AS model,
                   sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens), sum(cache_read_tokens),
                   sum({_COST_SQL[flt.mode]}), max(ts), any_value(project), count(*)
            FROM usage_messages WHERE {where}
            GROUP BY ALL ORDER BY period, model""",
        params,
    )
    list_name, field_name = _SHAPE[kind]
    entries: dict[str, dict] = {}
    for period_value, model, inp, out, cw, cr, cost, last_ts, project, responses in rows:
        entry = entries.setdefault(period_value, {field_name: period_value, **dict.fromkeys(_TOKEN_FIELDS, 0),
                                                  "totalTokens": 0, "totalCost": 0.0, "modelsUsed": [],
                                                  "modelBreakdowns": [], "responses": 0})
        tokens = (int(inp), int(out), int(cw), int(cr))
        for name, value in zip(_TOKEN_FIELDS, tokens, strict=True):
            entry[name] += value
        entry["totalTokens"] += sum(tokens)
        entry["totalCost"] += float(cost)
        entry["responses"] += int(responses)
        entry["modelsUsed"].append(model)
        entry["modelBreakdowns"].append({"modelName": model, **dict(zip(_TOKEN_FIELDS, tokens, strict=True)),
                                         "cost": float(cost)})
        if kind == "session":
            last = last_ts.astimezone(UTC).isoformat() if last_ts else None
            entry["lastActivity"] = max(filter(None, [entry.get("lastActivity"), last]), default=None)
            entry["projectPath"] = project
    return {list_name: list(entries.values())}


def _totals(conn, where: str, params: dict, mode: str) -> dict:
    inp, out, cw, cr, cost = _query(
        conn,
        f"""SELECT coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
                   coalesce(sum(cache_creation_tokens), 0), coalesce(sum(cache_read_tokens), 0),
                   coalesce(sum({_COST_SQL[mode]}), 0)
            FROM usage_messages WHERE {where}""",
        params,
    )[0]
    tokens = (int(inp), int(out), int(cw), int(cr))
    return {**dict(zip(_TOKEN_FIELDS, tokens, strict=True)), "totalTokens": sum(tokens), "totalCost": float(cost)}


def _blocks(conn, where: str, params: dict, flt: ReportFilter) -> dict:
    """5-hour billing windows: a block starts at its first entry floored to the hour and ends 5 h later;
    an entry after the block's end, or 5 h after the previous entry, starts a new block."""
    rows = _query(
        conn,
        f"""SELECT ts, coalesce(model, 'unknown'), input_tokens, output_tokens, cache_creation_tokens,
                   cache_read_tokens, {_COST_SQL[flt.mode]}
            FROM usage_messages WHERE {where} ORDER BY ts""",
        params,
    )
    span = timedelta(hours=BLOCK_HOURS)
    blocks: list[dict] = []
    current: dict | None = None
    last_ts: datetime | None = None
    for ts, model, inp, out, cw, cr, cost in rows:
        ts = ts.astimezone(UTC)
        if current is None or ts >= current["_end"] or (last_ts is not None and ts - last_ts >= span):
            start = ts.replace(minute=0, second=0, microsecond=0)
            current = {"_end": start + span, "id": start.isoformat(), "startTime": start.isoformat(),
                       "endTime": (start + span).isoformat(), "entries": 0, "isGap": False,
                       "tokenCounts": defaultdict(int), "costUSD": 0.0, "_models": {}}
            blocks.append(current)
        current["entries"] += 1
        current["actualEndTime"] = ts.isoformat()
        counts = current["tokenCounts"]
        counts["inputTokens"] += inp
        counts["outputTokens"] += out
        counts["cacheCreationInputTokens"] += cw
        counts["cacheReadInputTokens"] += cr
        current["costUSD"] += float(cost)
        current["_models"][model] = None
        last_ts = ts
    now = datetime.now(UTC)
    for block in blocks:
        end = block.pop("_end")
        block["models"] = list(block.pop("_models"))
        block["tokenCounts"] = dict(block["tokenCounts"])
        block["totalTokens"] = sum(block["tokenCounts"].values())
        block["isActive"] = now < end and last_ts is not None and now - last_ts < span and block is blocks[-1]
    return {"blocks": blocks}
