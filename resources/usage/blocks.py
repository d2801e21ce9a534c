"""5-hour billing blocks, the way ccusage 20 builds them (``ccusage blocks --json``).

A block starts at its first entry floored to the UTC hour and lasts ``BLOCK_HOURS``. An entry more
than that after the block's start, or more than that after the previous entry, closes the block;
in the second case a gap block (``isGap``, ``id: "gap-<start>"``) spans from the last entry plus the
block length to the next entry. A block is active while ``now`` is before its end and less than a
block length after its last entry; only the active block gets a ``burnRate`` (over the span from its
first to its last entry) and a ``projection`` to its end.

A block's ``totalTokens`` is its four ``tokenCounts`` plus the output its agents report apart from
``outputTokens`` (Gemini's and Qwen's thoughts, OpenCode's reasoning): ccusage 20 counts those in
``totalTokens`` in every report it makes for those agents (its ``blocks`` read Claude Code alone,
whose rows have none), and so do this report's ``totals``, which the blocks add up to.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

BLOCK_HOURS = 5


class BlockEntry(NamedTuple):
    """One response: what a block needs of a ``usage_messages`` row."""

    ts: datetime
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    cost: float
    extra_output_tokens: int


def iso_z(ts: datetime) -> str:
    """``2026-01-10T09:15:00.000Z``: UTC, milliseconds, ``Z`` (JavaScript's ``toISOString``)."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def build_blocks(entries: Iterable[BlockEntry], now: datetime | None = None,
                 hours: float = BLOCK_HOURS) -> list[dict]:
    """Blocks (gap blocks included) over ``entries``, which must be in timestamp order."""
    now = now or datetime.now(UTC)
    span = timedelta(hours=hours)
    blocks: list[dict] = []
    current: list[BlockEntry] = []
    start: datetime | None = None
    for entry in entries:
        if start is not None:
            since_last = entry.ts - current[-1].ts
            if entry.ts - start > span or since_last > span:
                blocks.append(_block(start, current, now, span))
                if since_last > span:
                    blocks.append(_gap(current[-1].ts + span, entry.ts))
                current = []
                start = None
        if start is None:
            start = entry.ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        current.append(entry)
    if current:
        blocks.append(_block(start, current, now, span))
    return blocks


WARNING_SHARE = 0.8
"""``tokenLimitStatus.status`` is ``warning`` above this share of the limit, as ccusage's."""


def token_limit_status(blocks: list[dict], limit: str) -> None:
    """Give each block with a projection ``tokenLimitStatus`` against ``limit`` (a token count, or
    ``max``: the largest finished block's total among ``blocks``), as ``ccusage blocks -t``.
    Nothing is added when ``max`` finds no finished block."""
    if limit == "max":
        tokens = max((b["totalTokens"] for b in blocks if not b["isGap"] and not b["isActive"]), default=0)
    else:
        tokens = int(limit)
    if tokens <= 0:
        return
    for block in blocks:
        if block["projection"] is None:
            continue
        projected = block["projection"]["totalTokens"]
        status = ("exceeds" if projected > tokens else "warning" if projected > tokens * WARNING_SHARE else "ok")
        block["tokenLimitStatus"] = {"limit": tokens, "projectedUsage": projected,
                                     "percentUsed": projected / tokens * 100, "status": status}


def active_block(blocks: list[dict]) -> dict | None:
    return next((b for b in reversed(blocks) if b["isActive"]), None)


def _block(start: datetime, entries: list[BlockEntry], now: datetime, span: timedelta) -> dict:
    end = start + span
    last = entries[-1].ts
    counts = {
        "inputTokens": sum(e.input_tokens for e in entries),
        "outputTokens": sum(e.output_tokens for e in entries),
        "cacheCreationInputTokens": sum(e.cache_creation_tokens for e in entries),
        "cacheReadInputTokens": sum(e.cache_read_tokens for e in entries),
    }
    block = {
        "id": iso_z(start),
        "startTime": iso_z(start),
        "endTime": iso_z(end),
        "actualEndTime": iso_z(last),
        "isActive": now - last < span and now < end,
        "isGap": False,
        "entries": len(entries),
        "tokenCounts": counts,
        "totalTokens": sum(counts.values()) + sum(e.extra_output_tokens for e in entries),
        "costUSD": sum(e.cost for e in entries),
        "models": list(dict.fromkeys(e.model for e in entries)),
        "burnRate": None,
        "projection": None,
    }
    minutes = (last - entries[0].ts).total_seconds() / 60
    if block["isActive"] and minutes > 0:
        rate = {
            "tokensPerMinute": block["totalTokens"] / minutes,
            "tokensPerMinuteForIndicator": (counts["inputTokens"] + counts["outputTokens"]) / minutes,
            "costPerHour": block["costUSD"] / minutes * 60,
        }
        remaining = max(0, _js_round((end - now).total_seconds() / 60))
        block["burnRate"] = rate
        block["projection"] = {
            "totalTokens": _js_round(block["totalTokens"] + rate["tokensPerMinute"] * remaining),
            "totalCost": _js_round((block["costUSD"] + rate["costPerHour"] / 60 * remaining) * 100) / 100,
            "remainingMinutes": remaining,
        }
    return block


def _js_round(x: float) -> int:
    """JavaScript's ``Math.round`` (halves go up), which ccusage's numbers follow; Python's rounds to even."""
    return math.floor(x + 0.5)


def _gap(start: datetime, end: datetime) -> dict:
    return {
        "id": f"gap-{iso_z(start)}",
        "startTime": iso_z(start),
        "endTime": iso_z(end),
        "actualEndTime": None,
        "isActive": False,
        "isGap": True,
        "entries": 0,
        "tokenCounts": dict.fromkeys(
            ("inputTokens", "outputTokens", "cacheCreationInputTokens", "cacheReadInputTokens"), 0),
        "totalTokens": 0,
        "costUSD": 0,
        "models": [],
        "burnRate": None,
        "projection": None,
    }
