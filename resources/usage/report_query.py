"""What a usage report asks of the warehouse: which rows (`ReportFilter`), in what shape (`ReportOptions`),
a row's cost in SQL per cost mode, the period each report groups by, and the one way a report queries.

`resources.usage.reports` builds the period, session and extra reports on these, `codex_report` the
Codex view and `block_report` the 5-hour blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import duckdb

from resources.usage.blocks import BLOCK_HOURS
from resources.usage.pricing import COST_MODES, PriceTable
from resources.usage.report_kinds import ORDERS, VIEWS, WEEKDAYS
from resources.usage.warehouse import sync_prices

CLAUDE = "claude"
"""The agent of the ``claude`` view (``ccusage claude ...``): only Claude Code's rows."""

LOCAL_ORIGIN = "(this machine)"
"""The user and machine of rows ingested from this machine's own sessions folder (not pushed)."""

PERIOD_SQL = {  # periods are grouped as dates, formatted once per row of the result (`period_text`), not per row read
    "daily": "CAST(timezone($tz, ts) AS DATE)",
    "weekly": "CAST(timezone($tz, ts) AS DATE) - CAST((isodow(timezone($tz, ts)) - $week_start + 7) % 7 AS INTEGER)",
    "monthly": "date_trunc('month', CAST(timezone($tz, ts) AS DATE))",
    "session": "coalesce(session_id, session_key)",
    "project": "project",
    "model": "coalesce(model, 'unknown')",
    "branch": "coalesce(git_branch, '(no branch)')",
    "user": f"coalesce(user_name, '{LOCAL_ORIGIN}')",
    "machine": f"coalesce(user_name || '@' || machine, '{LOCAL_ORIGIN}')",
}
_UTC_DAY_SQL = "epoch_us(ts) // 86400000000 - CAST(epoch_us(ts) % 86400000000 < 0 AS BIGINT)"
"""A UTC day as days since 1970-01-01 (floored), for ``daily`` in UTC: integer arithmetic, where
``timezone($tz, ts)`` converts every row through ICU (a daily report at 240,000 rows: 30 against 69 ms)."""
_UTC_ZONES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT"})
_EPOCH_DAY = date(1970, 1, 1)
# (list name, period field) per view and report.
SHAPE = {
    "claude": {"daily": ("daily", "date"), "weekly": ("weekly", "week"), "monthly": ("monthly", "month"),
               "session": ("sessions", "sessionId")},
    "all": {"daily": ("daily", "period"), "weekly": ("weekly", "period"), "monthly": ("monthly", "period"),
            "session": ("session", "period")},
    "extra": {"project": ("projects", "project"), "model": ("models", "model"), "branch": ("branches", "gitBranch"),
              "user": ("users", "user"), "machine": ("machines", "machine")},
}
COST_SQL = {  # the cost of a row, per cost mode
    "auto": "coalesce(cost_usd, computed_cost_usd, 0)",
    "calculate": "coalesce(computed_cost_usd, 0)",
    "display": "coalesce(cost_usd, 0)",
}
EXACT_COST = "DECIMAL(38, 12)"
"""Costs are summed as exact decimals (each row's rounded to 1e-12 USD) and rounded to a float once, so
a total never depends on the order DuckDB's threads or the report add rows in."""
_BILLABLE = "input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens > 0"
UNPRICED_SQL = {  # a row whose cost is counted at $0 for want of a price, per cost mode
    "auto": f"cost_usd IS NULL AND computed_cost_usd IS NULL AND {_BILLABLE}",
    "calculate": f"computed_cost_usd IS NULL AND {_BILLABLE}",
    "display": "FALSE",
}
TOKEN_FIELDS = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens")
_FILTER_SQL = (  # each field of a ReportFilter that narrows the rows, and its clause (bound to a parameter of its name)
    ("since", "CAST(timezone($tz, ts) AS DATE) >= $since"),
    ("until", "CAST(timezone($tz, ts) AS DATE) <= $until"),
    ("projects", "list_contains($projects, project)"),
    ("agent", "agent = $agent"),
    ("user", "user_name = $user"),
    ("machine", "(machine = $machine OR user_name || '@' || machine = $machine)"),  # as the machine report names it
)


@dataclass(frozen=True)
class ReportFilter:
    """Which rows a report covers: days (in ``timezone``), projects (any of them; empty: all), agent, user,
    machine, and the cost mode."""

    since: date | None = None
    until: date | None = None
    timezone: str = "UTC"
    projects: tuple[str, ...] = ()
    mode: str = "auto"
    agent: str | None = None
    user: str | None = None
    machine: str | None = None

    def where(self) -> tuple[str, dict]:
        if self.mode not in COST_MODES:
            raise ValueError(f"cost mode {self.mode!r}: expected one of {', '.join(COST_MODES)}")
        clauses, params = ["TRUE"], {"tz": self.timezone}
        for name, clause in _FILTER_SQL:
            value = getattr(self, name)
            if value:
                clauses.append(clause)
                params[name] = list(value) if isinstance(value, tuple) else value  # a tuple binds as a STRUCT
        return " AND ".join(clauses), params


@dataclass(frozen=True)
class ReportOptions:
    """How a report is shaped: ``view`` (see the module doc), ``order`` (None: the report's default),
    ``start_of_week`` (None: the view's default), ``instances`` (period rows grouped by project,
    ``{"projects": {name: [rows]}}``), ``by_agent`` (every row of the ``all`` view gets ``agents``:
    the same numbers per agent, by agent name, as ``ccusage --by-agent`` prints them), ``by_machine``
    (every row gets ``machines``: the same numbers per machine, named as the machine report names them),
    ``now`` (which block is active; default: the clock), and for blocks ``active`` (only the active
    one), ``recent`` (those started in the last 3 days, and the active one), ``block_hours`` (the
    window's length) and ``token_limit`` (a number of tokens, or ``max``: the largest finished
    block's; the active block gets ``tokenLimitStatus`` against it, as ccusage's ``-t``)."""

    view: str = "all"
    order: str | None = None
    start_of_week: str | None = None
    instances: bool = False
    by_agent: bool = False
    by_machine: bool = False
    now: datetime | None = None
    active: bool = False
    recent: bool = False
    block_hours: float = BLOCK_HOURS
    token_limit: str | None = None

    def __post_init__(self):
        if self.view not in VIEWS:
            raise ValueError(f"view {self.view!r}: expected one of {', '.join(VIEWS)}")
        if self.order is not None and self.order not in ORDERS:
            raise ValueError(f"order {self.order!r}: expected asc or desc")
        if self.start_of_week is not None and self.start_of_week not in WEEKDAYS:
            raise ValueError(f"start of week {self.start_of_week!r}: expected one of {', '.join(WEEKDAYS)}")

def prepare(conn, flt: ReportFilter, prices: PriceTable | None) -> tuple[str, dict]:
    if prices is not None:
        sync_prices(conn, prices)
    where, params = flt.where()
    try:  # an unknown zone would otherwise only fail once a row is converted, or never on an empty table
        query(conn, "SELECT timezone($tz, TIMESTAMPTZ '2000-01-01 00:00:00+00')", params)
    except duckdb.Error as exc:
        raise ValueError(f"unknown time zone {flt.timezone!r}") from exc
    return where, params

def query(conn, sql: str, params: dict) -> list[tuple]:
    """Run ``sql`` with the named parameters it references (DuckDB rejects unused ones)."""
    return conn.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql}).fetchall()

def period_sql(kind: str, tz: str) -> str:
    return _UTC_DAY_SQL if kind == "daily" and tz in _UTC_ZONES else PERIOD_SQL[kind]


def period_text(kind: str, value):
    """A period as reports print it: ``YYYY-MM-DD`` for a day or a week's first day, ``YYYY-MM`` for a month
    (a day given as days since 1970-01-01 too, see `_UTC_DAY_SQL`); any other report's group value as it is."""
    if type(value) is int:
        value = _EPOCH_DAY + timedelta(days=value)
    if kind == "monthly":
        return f"{value.year:04d}-{value.month:02d}"
    return value.isoformat() if kind in ("daily", "weekly") else value
