"""The Codex view's reports, ``ccusage codex daily|monthly|session --json``: rows keyed by ``date``,
``month`` or ``sessionId`` (the rollout's path under ``sessions/`` without ``.jsonl``), with ``costUSD``,
``reasoningOutputTokens`` and ``models{}`` per model; sessions add ``lastActivity``, ``sessionFile``
and ``directory``."""

from __future__ import annotations

from resources.times import utc_from_us
from resources.usage.blocks import iso_z
from resources.usage.pricing import UNPRICED_MODELS
from resources.usage.report_query import (
    COST_SQL,
    EXACT_COST,
    PERIOD_SQL,
    SHAPE,
    UNPRICED_SQL,
    ReportFilter,
    ReportOptions,
    period_text,
    query,
)

_CODEX_COUNTS = ("inputTokens", "cacheCreationTokens", "cacheReadTokens", "outputTokens", "reasoningOutputTokens",
                 "totalTokens")


def codex_report(conn, kind: str, where: str, params: dict, flt: ReportFilter, opts: ReportOptions) -> dict:
    """``ccusage codex daily|monthly|session --json`` (see the module doc); rows in period or id order."""
    rows = query(
        conn,
        f"""SELECT {PERIOD_SQL[kind]}, coalesce(model, 'unknown'), sum(input_tokens), sum(cache_creation_tokens),
                   sum(cache_read_tokens), sum(output_tokens), sum(reasoning_output_tokens),
                   sum(input_tokens + cache_creation_tokens + cache_read_tokens + output_tokens
                       + extra_output_tokens), sum(CAST({COST_SQL[flt.mode]} AS {EXACT_COST})), epoch_us(max(ts)),
                   bool_or({UNPRICED_SQL[flt.mode]})
            FROM usage_messages WHERE {where} GROUP BY ALL ORDER BY 1, 2""",
        params,
    )
    list_name, field = SHAPE["claude"][kind]
    groups: dict[str, dict] = {}
    for period, model, *counts, cost, last_us, _ in rows:
        period, last = period_text(kind, period), utc_from_us(last_us)
        group = groups.setdefault(period, {field: period, **dict.fromkeys(_CODEX_COUNTS, 0), "costUSD": 0.0,
                                           "models": {}, "_last": last})
        numbers = dict(zip(_CODEX_COUNTS, map(int, counts), strict=True))
        for name, value in numbers.items():
            group[name] += value
        group["costUSD"] += float(cost)
        group["models"][model] = {**numbers, "isFallback": False}
        group["_last"] = max(group["_last"], last)
    out = []
    for period, group in groups.items():
        last = group.pop("_last")
        if kind == "session":
            directory, _, name = period.rpartition("/")
            group.update(lastActivity=iso_z(last), sessionFile=name, directory=directory)
        out.append(group)
    if opts.order == "desc":
        out.reverse()
    totals = {name: sum(g[name] for g in out) for name in _CODEX_COUNTS}
    totals["costUSD"] = sum(g["costUSD"] for g in out)
    unpriced = sorted({r[1] for r in rows if r[-1] and r[1] not in UNPRICED_MODELS})
    if unpriced:
        totals["unpricedModels"] = unpriced
    return {list_name: out, "totals": totals}
