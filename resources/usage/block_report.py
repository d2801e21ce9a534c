"""The blocks report: Claude Code's 5-hour billing windows (``ccusage blocks --json``).

Blocks count Claude Code alone unless the filter names another agent, are built over the agent's
whole history and only then kept or dropped by the day they start (``since``/``until``, in the
report's zone), ``active`` and ``recent``; their ``totals`` add up the blocks shown.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from resources.times import utc_from_us
from resources.usage.blocks import BlockEntry, build_blocks, iso_z, token_limit_status
from resources.usage.pricing import UNPRICED_MODELS, PriceTable
from resources.usage.report_query import (
    CLAUDE,
    COST_SQL,
    TOKEN_FIELDS,
    UNPRICED_SQL,
    ReportFilter,
    ReportOptions,
    prepare,
    query,
)

RECENT_DAYS = 3
"""``blocks --recent``: blocks started this many days before now, as ccusage."""


def _parse_z(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def blocks_report(conn, flt: ReportFilter, prices: PriceTable | None, opts: ReportOptions) -> dict:
    """Blocks over the agent's whole history (Claude Code's unless the filter names another agent),
    then kept by their start day, ``active`` and ``recent`` (see the module doc)."""
    days = (flt.since, flt.until)
    flt = replace(flt, since=None, until=None, agent=flt.agent or CLAUDE)
    where, params = prepare(conn, flt, prices)
    rows = query(
        conn,
        f"""SELECT epoch_us(ts), coalesce(model, 'unknown'), input_tokens, output_tokens, cache_creation_tokens,
                   cache_read_tokens, {COST_SQL[flt.mode]}, {UNPRICED_SQL[flt.mode]}, extra_output_tokens
            FROM usage_messages WHERE {where} ORDER BY ts, session_key, line_offset""",
        params,
    )
    rows = [(utc_from_us(r[0]), *r[1:]) for r in rows]
    now = opts.now or datetime.now(UTC)
    blocks = build_blocks((BlockEntry(*r[:6], float(r[6]), r[8]) for r in rows), now, opts.block_hours)
    if days != (None, None):
        zone = ZoneInfo(flt.timezone)
        starts = [_parse_z(b["startTime"]).astimezone(zone).date() for b in blocks]
        blocks = [b for b, day in zip(blocks, starts, strict=True)
                  if (days[0] is None or day >= days[0]) and (days[1] is None or day <= days[1])]
    if opts.recent:
        since = iso_z(now - timedelta(days=RECENT_DAYS))
        blocks = [b for b in blocks if b["startTime"] >= since or b["isActive"]]
    if opts.active:
        blocks = [b for b in blocks if b["isActive"]]
    if opts.token_limit is not None:
        token_limit_status(blocks, opts.token_limit)
    if opts.order == "desc":
        blocks.reverse()
    shown = [b for b in blocks if not b["isGap"]]
    counts = ("inputTokens", "outputTokens", "cacheCreationInputTokens", "cacheReadInputTokens")
    totals = {name: sum(b["tokenCounts"][key] for b in shown) for name, key in zip(TOKEN_FIELDS, counts, strict=True)}
    totals.update(totalTokens=sum(b["totalTokens"] for b in shown), totalCost=sum(b["costUSD"] for b in shown))
    times = [r[0] for r in rows]
    unpriced = sorted({r[1] for b in shown for r in rows[bisect_left(times, _parse_z(b["startTime"])):
                                                          bisect_right(times, _parse_z(b["actualEndTime"]))]
                       if r[7] and r[1] not in UNPRICED_MODELS})
    if unpriced:
        totals["unpricedModels"] = unpriced
    return {"blocks": blocks, "totals": totals}
