"""The live figures a status line shows, read from the warehouse in one connection.

`live_usage` returns, over one agent's rows (Claude Code's by default, as ``ccusage statusline``
counts), one session's cost, the cost between two instants (a day in the user's zone), the active
5-hour block (as `resources.usage.blocks` builds it) and the context size of the
session's last response. Blocks are rebuilt only from the last pause longer than a block onward:
a block always starts fresh after such a pause, so the active block is the same as over all rows
(looking back at most `LOOKBACK_DAYS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from resources.usage.blocks import BLOCK_HOURS, BlockEntry, active_block, build_blocks
from resources.usage.report_query import COST_SQL, EXACT_COST

LOOKBACK_DAYS = 7
"""Rows older than this are not read; only a week of use without one 5-hour pause would shift the block."""


@dataclass(frozen=True)
class LiveUsage:
    session_cost: float
    day_cost: float
    block: dict | None
    """The active block (``costUSD``, ``endTime``, ``burnRate``, ...), or None."""
    context_tokens: int | None
    """Input + cache tokens of the session's last main-thread response (what its context held)."""


def live_usage(conn: duckdb.DuckDBPyConnection, session_id: str | None, day_start: datetime, day_end: datetime,
               now: datetime, mode: str = "auto", agent: str = "claude") -> LiveUsage:
    cost = f"CAST({COST_SQL[mode]} AS {EXACT_COST})"  # summed exactly, as the reports sum: the same total
    session_cost, day_cost = conn.execute(
        f"""SELECT coalesce(sum({cost}) FILTER (WHERE coalesce(session_id, session_key) = $session), 0),
                   coalesce(sum({cost}) FILTER (WHERE ts >= $day_start AND ts < $day_end), 0)
            FROM usage_messages WHERE agent = $agent""",
        {"session": session_id, "day_start": day_start, "day_end": day_end, "agent": agent},
    ).fetchall()[0]
    context = conn.execute(
        """SELECT input_tokens + cache_creation_tokens + cache_read_tokens FROM usage_messages
           WHERE coalesce(session_id, session_key) = $session AND NOT is_sidechain AND agent = $agent
           ORDER BY ts DESC, line_offset DESC LIMIT 1""",
        {"session": session_id, "agent": agent},
    ).fetchall()
    return LiveUsage(float(session_cost), float(day_cost), _active_block(conn, now, mode, agent),
                     int(context[0][0]) if context else None)


def _active_block(conn, now: datetime, mode: str, agent: str) -> dict | None:
    (last,) = conn.execute("SELECT max(ts) FROM usage_messages WHERE ts <= $now AND agent = $agent",
                           {"now": now, "agent": agent}).fetchall()[0]
    if last is None or now - last >= timedelta(hours=BLOCK_HOURS):
        return None
    (chain_start,) = conn.execute(
        f"""SELECT max(ts) FROM (SELECT ts, lag(ts) OVER (ORDER BY ts) AS prev FROM usage_messages
                                 WHERE ts <= $now AND ts >= $now - INTERVAL {LOOKBACK_DAYS} DAY AND agent = $agent)
            WHERE prev IS NULL OR ts - prev > INTERVAL {BLOCK_HOURS} HOUR""",
        {"now": now, "agent": agent},
    ).fetchall()[0]
    rows = conn.execute(
        f"""SELECT ts, coalesce(model, 'unknown'), input_tokens, output_tokens, cache_creation_tokens,
                   cache_read_tokens, {COST_SQL[mode]}, extra_output_tokens
            FROM usage_messages WHERE ts >= $start AND ts <= $now AND agent = $agent
            ORDER BY ts, session_key, line_offset""",
        {"start": chain_start, "now": now, "agent": agent},
    ).fetchall()
    return active_block(build_blocks((BlockEntry(*r[:6], float(r[6]), r[7]) for r in rows), now))
