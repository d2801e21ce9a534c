"""Usage reports over the warehouse, in ccusage 20's JSON shapes so scripts written for it keep working.

ccusage 20 has a view over all agents and one per agent, and so do these reports:
- ``all`` (``ccusage daily --json``): rows keyed by ``period`` with ``agent: "all"`` and
  ``metadata.agents``; the session list is named ``session``, one row per agent's session
  (``agent``, ``metadata.lastActivity``, and for Codex ``metadata.reasoningOutputTokens``; Gemini's
  sessions have no ``metadata``);
- ``claude`` (``ccusage claude daily --json``): rows keyed by ``date``, ``week``, ``month``, and
  ``sessions[]`` with ``sessionId``, ``projectPath``, ``firstActivity``, ``lastActivity``;
- ``gemini``, ``opencode``, ``qwen`` (``ccusage gemini daily --json``, ...): the ``claude`` shape
  without sessionlake's ``responses``; sessions in id order, with ``firstActivity``,
  ``lastActivity`` and ``projectPath`` for Qwen only, as ccusage prints them;
- ``codex`` (``ccusage codex daily --json``): rows keyed by ``date``, ``month``, ``sessionId``
  (the rollout's path under ``sessions/`` without ``.jsonl``), with ``costUSD``,
  ``reasoningOutputTokens`` and ``models{}`` per model; sessions add ``lastActivity``,
  ``sessionFile`` and ``directory``.
In both, ``modelBreakdowns`` come highest cost first (a model without a price gets
``missingPricing: true``), ``totals.unpricedModels`` names the models without a price (only when
there are any), and timestamps read ``2026-01-10T09:15:00.000Z``. Periods come oldest first and
sessions highest cost first, unless ``order`` says otherwise. sessionlake adds the project, model and
branch reports (highest cost first) and, outside the per-agent views, a ``responses`` count per row.
A period row of a report filtered to one project carries ``project``, as ``ccusage claude daily
--project`` prints it.

Blocks are Claude Code's 5-hour billing windows: they count Claude Code alone unless the filter
names another agent, are built over the agent's whole history and only then kept or dropped by
the day they start (``since``/``until``, in the report's zone), ``active`` and ``recent``; their
``totals`` add up the blocks shown.

Filters and the time zone are applied in SQL: one query per report, aggregated per period and model.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import duckdb

from resources.times import utc_from_us
from resources.usage.blocks import BLOCK_HOURS, BlockEntry, build_blocks, iso_z, token_limit_status
from resources.usage.pricing import COST_MODES, UNPRICED_MODELS, PriceTable
from resources.usage.report_kinds import (
    AGENT_REPORTS,
    DEFAULT_START_OF_WEEK,
    ORDERS,
    PERIOD_REPORTS,
    REPORTS,
    VIEWS,
    WEEKDAYS,
)
from resources.usage.warehouse import sync_prices

RECENT_DAYS = 3
"""``blocks --recent``: blocks started this many days before now, as ccusage."""
CLAUDE = "claude"
"""The agent of the ``claude`` view (``ccusage claude ...``): only Claude Code's rows."""

LOCAL_ORIGIN = "(this machine)"
"""The user and machine of rows ingested from this machine's own sessions folder (not pushed)."""

_PERIOD_SQL = {  # periods are grouped as dates, formatted once per row of the result (`_period_text`), not per row read
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
_SHAPE = {
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
_TOKEN_FIELDS = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens")


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
        if self.since:
            clauses.append("CAST(timezone($tz, ts) AS DATE) >= $since")
            params["since"] = self.since
        if self.until:
            clauses.append("CAST(timezone($tz, ts) AS DATE) <= $until")
            params["until"] = self.until
        if self.projects:
            clauses.append("list_contains($projects, project)")
            params["projects"] = list(self.projects)
        if self.agent:
            clauses.append("agent = $agent")
            params["agent"] = self.agent
        if self.user:
            clauses.append("user_name = $user")
            params["user"] = self.user
        if self.machine:  # a machine's name, or user@machine as the machine report shows it
            clauses.append("(machine = $machine OR user_name || '@' || machine = $machine)")
            params["machine"] = self.machine
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


def usage_report(conn: duckdb.DuckDBPyConnection, kind: str, flt: ReportFilter | None = None,
                 prices: PriceTable | None = None, opts: ReportOptions | None = None) -> dict:
    """The report ``kind`` (one of `REPORTS`) as a ccusage-shaped dict with a ``totals`` object.

    With ``prices``, stored rows are re-costed first if that table differs from the one they were
    costed with.
    """
    flt, opts = flt or ReportFilter(), opts or ReportOptions()
    if kind not in REPORTS:
        raise ValueError(f"unknown report {kind!r}: expected one of {', '.join(REPORTS)}")
    if opts.view != "all":
        if kind not in AGENT_REPORTS[opts.view]:
            raise ValueError(f"the {opts.view} view has no {kind} report: expected one of "
                             f"{', '.join(AGENT_REPORTS[opts.view])}")
        if flt.agent not in (None, opts.view):
            raise ValueError(f"the {opts.view} view holds {opts.view}'s rows only, not {flt.agent!r}'s")
        flt = replace(flt, agent=opts.view)
    if kind == "blocks":
        return _blocks(conn, flt, prices, opts)
    where, params = _prepare(conn, flt, prices)
    if opts.view == "codex":
        return _codex(conn, kind, where, params, flt, opts)
    return _grouped(conn, kind, where, params, flt, opts)


def session_usage(conn: duckdb.DuckDBPyConnection, session_id: str, flt: ReportFilter | None = None,
                  prices: PriceTable | None = None) -> dict | None:
    """``ccusage session --id``: one session's responses in time order, or None if it has none."""
    flt = flt or ReportFilter()
    where, params = _prepare(conn, flt, prices)
    rows = _query(
        conn,
        f"""SELECT epoch_us(ts), coalesce(model, 'unknown'), input_tokens, output_tokens, cache_creation_tokens,
                   cache_read_tokens, cost_usd, {COST_SQL[flt.mode]}, extra_output_tokens
            FROM usage_messages WHERE {where} AND coalesce(session_id, session_key) = $session
            ORDER BY ts, session_key, line_offset""",
        {**params, "session": session_id},
    )
    if not rows:
        return None
    # costUSD per entry is the transcript's own figure (0 when it has none), as ccusage prints it.
    entries = [{"timestamp": iso_z(utc_from_us(ts)), "model": model, "inputTokens": inp, "outputTokens": out,
                "cacheCreationTokens": cw, "cacheReadTokens": cr, "costUSD": float(file_cost or 0.0)}
               for ts, model, inp, out, cw, cr, file_cost, _, _ in rows]
    return {"sessionId": session_id, "totalCost": sum(float(r[7]) for r in rows),
            "totalTokens": sum(r[2] + r[3] + r[4] + r[5] + r[8] for r in rows), "entries": entries}


def _prepare(conn, flt: ReportFilter, prices: PriceTable | None) -> tuple[str, dict]:
    if prices is not None:
        sync_prices(conn, prices)
    where, params = flt.where()
    try:  # an unknown zone would otherwise only fail once a row is converted, or never on an empty table
        _query(conn, "SELECT timezone($tz, TIMESTAMPTZ '2000-01-01 00:00:00+00')", params)
    except duckdb.Error as exc:
        raise ValueError(f"unknown time zone {flt.timezone!r}") from exc
    return where, params


def known_projects(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Every project with usage rows, sorted."""
    return [r[0] for r in conn.execute("SELECT DISTINCT project FROM usage_messages ORDER BY 1").fetchall()]


def _query(conn, sql: str, params: dict) -> list[tuple]:
    """Run ``sql`` with the named parameters it references (DuckDB rejects unused ones)."""
    return conn.execute(sql, {k: v for k, v in params.items() if f"${k}" in sql}).fetchall()


def _grouped(conn, kind: str, where: str, params: dict, flt: ReportFilter, opts: ReportOptions) -> dict:
    instances = opts.instances and kind in PERIOD_REPORTS
    week_start = WEEKDAYS.index(opts.start_of_week or DEFAULT_START_OF_WEEK.get(opts.view, "sunday")) + 1
    # the order models first appear in, for rows that list them so (see _finish); an "all" period row sorts them
    sorted_models = opts.view == "all" and kind in PERIOD_REPORTS and not (opts.by_agent or opts.by_machine)
    first_seen = "NULL" if sorted_models else \
        "min(struct_pack(d := CAST(timezone($tz, ts) AS DATE), k := session_key, o := line_offset))"
    rows = _query(
        conn,
        f"""SELECT {_period_sql(kind, params["tz"])}, {"project" if instances else "NULL"}, coalesce(model, 'unknown'),
                   sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens), sum(cache_read_tokens),
                   sum(CAST({COST_SQL[flt.mode]} AS {EXACT_COST})), epoch_us(min(ts)), epoch_us(max(ts)),
                   any_value(project), count(*), bool_or({UNPRICED_SQL[flt.mode]}), {first_seen},
                   agent, sum(extra_output_tokens), {_PERIOD_SQL["machine"] if opts.by_machine else "NULL"},
                   sum(reasoning_output_tokens)
            FROM usage_messages WHERE {where}
            GROUP BY ALL""",
        {**params, "week_start": week_start},
    )
    view = "extra" if kind in _SHAPE["extra"] else opts.view
    list_name, field = _SHAPE.get(view, _SHAPE["claude"])[kind]
    per_agent = view == "all" and kind == "session"  # ccusage lists each agent's session on its own
    entries: dict[tuple, dict] = {}
    for (period, group, model, inp, out, cw, cr, cost, first, last, project, responses, unpriced, seen, agent,
         extra, machine, reasoning) in rows:
        period, first, last = _period_text(kind, period), utc_from_us(first), utc_from_us(last)
        entry = _entry(entries, (group, period, agent if per_agent else None), field, period, first, last, project)
        if group is not None:
            entry["project"] = group
        elif len(flt.projects) == 1 and kind in PERIOD_REPORTS:
            entry["project"] = flt.projects[0]
        numbers = ((int(inp), int(out), int(cw), int(cr)), int(extra), cost, int(responses), unpriced,
                   seen and (seen["d"], seen["k"], seen["o"]), first, last)
        targets = [entry]
        if opts.by_agent:
            targets.append(_entry(entry["_by_agent"], agent, field, period, first, last, project))
        if opts.by_machine:
            targets.append(_entry(entry["_by_machine"], machine, field, period, first, last, project))
        for target in targets:
            _add(target, model, *numbers)
            target["_agents"].add(agent)
            target["_reasoning"] += int(reasoning)
    rows_out = [_finish(entry, kind, view, field) for entry in entries.values()]
    if view in _AGENT_SHAPES:
        for entry in rows_out:
            _agent_shape(entry, kind, view)
    report = _order(rows_out, kind, field, opts.order, by_id=view in _AGENT_SHAPES)
    result = {list_name: report}
    if instances:
        by_project: dict[str, list[dict]] = {}
        for entry in report:
            by_project.setdefault(entry["project"], []).append(entry)
        result = {"projects": dict(sorted(by_project.items()))}
    result["totals"] = _totals((r[2], *r[3:8], r[12], r[15]) for r in rows)
    return result


def _period_sql(kind: str, tz: str) -> str:
    return _UTC_DAY_SQL if kind == "daily" and tz in _UTC_ZONES else _PERIOD_SQL[kind]


def _period_text(kind: str, value):
    """A period as reports print it: ``YYYY-MM-DD`` for a day or a week's first day, ``YYYY-MM`` for a month
    (a day given as days since 1970-01-01 too, see `_UTC_DAY_SQL`); any other report's group value as it is."""
    if type(value) is int:
        value = _EPOCH_DAY + timedelta(days=value)
    if kind == "monthly":
        return f"{value.year:04d}-{value.month:02d}"
    return value.isoformat() if kind in ("daily", "weekly") else value


def _entry(entries: dict, key, field: str, period, first, last, project) -> dict:
    entry = entries.get(key)
    if entry is None:
        entry = entries[key] = {
            field: period, **dict.fromkeys(_TOKEN_FIELDS, 0), "totalTokens": 0, "totalCost": Decimal(0),
            "responses": 0, "modelBreakdowns": [], "_seen": {}, "_first": first, "_last": last,
            "_project": project, "_agents": set(), "_by_agent": {}, "_by_machine": {}, "_reasoning": 0}
    return entry


def _add(entry: dict, model: str, tokens: tuple[int, int, int, int], extra: int, cost: Decimal, responses: int,
         unpriced: bool, seen: tuple, first, last) -> None:
    """Add one (period, model, agent) group's numbers to a row (``extra``: output reported apart from
    ``outputTokens``, counted in ``totalTokens`` only, as ccusage does)."""
    for name, value in zip(_TOKEN_FIELDS, tokens, strict=True):
        entry[name] += value
    entry["totalTokens"] += sum(tokens) + extra
    entry["totalCost"] += cost
    entry["responses"] += responses
    same = next((b for b in entry["modelBreakdowns"] if b["modelName"] == model), None)
    if same is None:
        same = {"modelName": model, **dict.fromkeys(_TOKEN_FIELDS, 0), "cost": Decimal(0)}
        entry["modelBreakdowns"].append(same)
    for name, value in zip(_TOKEN_FIELDS, tokens, strict=True):
        same[name] += value
    same["cost"] += cost
    if unpriced and model not in UNPRICED_MODELS:
        same["missingPricing"] = True
    entry["_seen"][model] = min(entry["_seen"].get(model, seen), seen) if seen else None
    entry["_first"], entry["_last"] = min(entry["_first"], first), max(entry["_last"], last)


def _finish(entry: dict, kind: str, view: str, field: str) -> dict:
    """Turn an accumulated row into its published shape (see the module doc)."""
    seen, agents, by_agent = entry.pop("_seen"), sorted(entry.pop("_agents")), entry.pop("_by_agent")
    by_machine = entry.pop("_by_machine")
    first, last, project = entry.pop("_first"), entry.pop("_last"), entry.pop("_project")
    reasoning = entry.pop("_reasoning")
    entry["totalCost"] = float(entry["totalCost"])  # summed exactly, rounded once
    for breakdown in entry["modelBreakdowns"]:
        breakdown["cost"] = float(breakdown["cost"])
    entry["modelBreakdowns"].sort(key=lambda b: (-b["cost"], b["modelName"]))
    # A per-agent row lists models as they first appear; an "all" row merges agents' lists, sorted.
    merged = view == "all" and kind in PERIOD_REPORTS
    entry["modelsUsed"] = sorted(seen) if merged else sorted(seen, key=seen.__getitem__)
    if view == "all":
        entry["agent"] = "all" if merged else agents[0]
        entry["metadata"] = {"agents": agents} if merged else {"lastActivity": iso_z(last)}
        if not merged and entry["agent"] == "codex":
            entry["metadata"]["reasoningOutputTokens"] = reasoning
        elif not merged and entry["agent"] == "gemini":  # ccusage knows no activity times of Gemini's sessions
            del entry["metadata"]
    elif kind == "session":
        entry.update(firstActivity=iso_z(first), lastActivity=iso_z(last), projectPath=project)
    if by_agent:
        entry["agents"] = [_finish_share(by_agent[agent], kind, field, "agent", agent) for agent in sorted(by_agent)]
    if by_machine:
        entry["machines"] = [_finish_share(by_machine[m], kind, field, "machine", m) for m in sorted(by_machine)]
    return entry


def _finish_share(sub: dict, kind: str, field: str, label: str, value: str) -> dict:
    """One agent's (or machine's) share of a row, as ccusage 20's ``--by-agent`` prints it: ``agent``
    (or ``machine``), the token fields, ``totalCost``, ``modelBreakdowns`` and ``modelsUsed`` (plus
    ``responses``)."""
    _finish(sub, kind, "claude", field)
    for name in (field, "firstActivity", "lastActivity", "projectPath"):
        sub.pop(name, None)
    sub[label] = value
    return sub


_AGENT_SHAPES = ("gemini", "opencode", "qwen")
_SESSION_ACTIVITY = ("firstActivity", "lastActivity", "projectPath")


def _agent_shape(entry: dict, kind: str, view: str) -> None:
    """A row of the claude shape as ccusage prints it for ``view`` (see the module doc)."""
    del entry["responses"]
    if kind == "session":
        if view == "qwen":
            entry["projectPath"] = entry["projectPath"].removeprefix(f"{view}:")
        else:
            for name in _SESSION_ACTIVITY:
                del entry[name]


def _order(rows: list[dict], kind: str, field: str, order: str | None, by_id: bool = False) -> list[dict]:
    """Periods oldest first; sessions and the extra reports highest cost first, or (``by_id``) in id order."""
    if kind in PERIOD_REPORTS or by_id:
        rows.sort(key=lambda e: e[field], reverse=order == "desc")
    else:  # sessions and the extra reports: highest cost first unless asked for ascending
        rows.sort(key=lambda e: (-e["totalCost"], e[field]))
        if order == "asc":
            rows.reverse()
    return rows


def _totals(items) -> dict:
    """Totals over ``(model, input, output, cache write, cache read, cost, unpriced, extra output)`` tuples."""
    items = list(items)
    tokens = [sum(int(item[i]) for item in items) for i in range(1, 5)]
    extra = sum(int(item[7]) for item in items)
    totals = {**dict(zip(_TOKEN_FIELDS, tokens, strict=True)), "totalTokens": sum(tokens) + extra,
              "totalCost": float(sum(Decimal(item[5]) for item in items))}
    unpriced = sorted({item[0] for item in items if item[6] and item[0] not in UNPRICED_MODELS})
    if unpriced:
        totals["unpricedModels"] = unpriced
    return totals


_CODEX_COUNTS = ("inputTokens", "cacheCreationTokens", "cacheReadTokens", "outputTokens", "reasoningOutputTokens",
                 "totalTokens")


def _codex(conn, kind: str, where: str, params: dict, flt: ReportFilter, opts: ReportOptions) -> dict:
    """``ccusage codex daily|monthly|session --json`` (see the module doc); rows in period or id order."""
    rows = _query(
        conn,
        f"""SELECT {_PERIOD_SQL[kind]}, coalesce(model, 'unknown'), sum(input_tokens), sum(cache_creation_tokens),
                   sum(cache_read_tokens), sum(output_tokens), sum(reasoning_output_tokens),
                   sum(input_tokens + cache_creation_tokens + cache_read_tokens + output_tokens
                       + extra_output_tokens), sum(CAST({COST_SQL[flt.mode]} AS {EXACT_COST})), epoch_us(max(ts)),
                   bool_or({UNPRICED_SQL[flt.mode]})
            FROM usage_messages WHERE {where} GROUP BY ALL ORDER BY 1, 2""",
        params,
    )
    list_name, field = _SHAPE["claude"][kind]
    groups: dict[str, dict] = {}
    for period, model, *counts, cost, last_us, _ in rows:
        period, last = _period_text(kind, period), utc_from_us(last_us)
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


def _parse_z(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _blocks(conn, flt: ReportFilter, prices: PriceTable | None, opts: ReportOptions) -> dict:
    """Blocks over the agent's whole history (Claude Code's unless the filter names another agent),
    then kept by their start day, ``active`` and ``recent`` (see the module doc)."""
    days = (flt.since, flt.until)
    flt = replace(flt, since=None, until=None, agent=flt.agent or CLAUDE)
    where, params = _prepare(conn, flt, prices)
    rows = _query(
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
    totals = {name: sum(b["tokenCounts"][key] for b in shown) for name, key in zip(_TOKEN_FIELDS, counts, strict=True)}
    totals.update(totalTokens=sum(b["totalTokens"] for b in shown), totalCost=sum(b["costUSD"] for b in shown))
    times = [r[0] for r in rows]
    unpriced = sorted({r[1] for b in shown for r in rows[bisect_left(times, _parse_z(b["startTime"])):
                                                          bisect_right(times, _parse_z(b["actualEndTime"]))]
                       if r[7] and r[1] not in UNPRICED_MODELS})
    if unpriced:
        totals["unpricedModels"] = unpriced
    return {"blocks": blocks, "totals": totals}
