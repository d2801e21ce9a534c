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
- ``codex`` (``ccusage codex daily --json``): see `resources.usage.codex_report`.
In all of them, ``modelBreakdowns`` come highest cost first (a model without a price gets
``missingPricing: true``), ``totals.unpricedModels`` names the models without a price (only when
there are any), and timestamps read ``2026-01-10T09:15:00.000Z``. Periods come oldest first and
sessions highest cost first, unless ``order`` says otherwise. sessionlake adds the project, model and
branch reports (highest cost first) and, outside the per-agent views, a ``responses`` count per row.
A period row of a report filtered to one project carries ``project``, as ``ccusage claude daily
--project`` prints it.

Blocks (Claude Code's 5-hour billing windows) are `resources.usage.block_report`'s.

Filters and the time zone are applied in SQL: one query per report, aggregated per period and model.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import duckdb

from resources.times import utc_from_us
from resources.usage.block_report import blocks_report
from resources.usage.blocks import iso_z
from resources.usage.codex_report import codex_report
from resources.usage.pricing import UNPRICED_MODELS, PriceTable
from resources.usage.report_kinds import AGENT_REPORTS, DEFAULT_START_OF_WEEK, PERIOD_REPORTS, REPORTS, WEEKDAYS
from resources.usage.report_query import (
    COST_SQL,
    EXACT_COST,
    PERIOD_SQL,
    SHAPE,
    TOKEN_FIELDS,
    UNPRICED_SQL,
    ReportFilter,
    ReportOptions,
    period_sql,
    period_text,
    prepare,
    query,
)


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
        return blocks_report(conn, flt, prices, opts)
    where, params = prepare(conn, flt, prices)
    if opts.view == "codex":
        return codex_report(conn, kind, where, params, flt, opts)
    return _grouped(conn, kind, where, params, flt, opts)


def session_usage(conn: duckdb.DuckDBPyConnection, session_id: str, flt: ReportFilter | None = None,
                  prices: PriceTable | None = None) -> dict | None:
    """``ccusage session --id``: one session's responses in time order, or None if it has none."""
    flt = flt or ReportFilter()
    where, params = prepare(conn, flt, prices)
    rows = query(
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

def known_projects(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Every project with usage rows, sorted."""
    return [r[0] for r in conn.execute("SELECT DISTINCT project FROM usage_messages ORDER BY 1").fetchall()]

def _grouped(conn, kind: str, where: str, params: dict, flt: ReportFilter, opts: ReportOptions) -> dict:
    instances = opts.instances and kind in PERIOD_REPORTS
    week_start = WEEKDAYS.index(opts.start_of_week or DEFAULT_START_OF_WEEK.get(opts.view, "sunday")) + 1
    # the order models first appear in, for rows that list them so (see _finish); an "all" period row sorts them
    sorted_models = opts.view == "all" and kind in PERIOD_REPORTS and not (opts.by_agent or opts.by_machine)
    first_seen = "NULL" if sorted_models else \
        "min(struct_pack(d := CAST(timezone($tz, ts) AS DATE), k := session_key, o := line_offset))"
    rows = query(
        conn,
        f"""SELECT {period_sql(kind, params["tz"])}, {"project" if instances else "NULL"}, coalesce(model, 'unknown'),
                   sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens), sum(cache_read_tokens),
                   sum(CAST({COST_SQL[flt.mode]} AS {EXACT_COST})), epoch_us(min(ts)), epoch_us(max(ts)),
                   any_value(project), count(*), bool_or({UNPRICED_SQL[flt.mode]}), {first_seen},
                   agent, sum(extra_output_tokens), {PERIOD_SQL["machine"] if opts.by_machine else "NULL"},
                   sum(reasoning_output_tokens)
            FROM usage_messages WHERE {where}
            GROUP BY ALL""",
        {**params, "week_start": week_start},
    )
    view = "extra" if kind in SHAPE["extra"] else opts.view
    list_name, field = SHAPE.get(view, SHAPE["claude"])[kind]
    per_agent = view == "all" and kind == "session"  # ccusage lists each agent's session on its own
    entries: dict[tuple, dict] = {}
    for (period, group, model, inp, out, cw, cr, cost, first, last, project, responses, unpriced, seen, agent,
         extra, machine, reasoning) in rows:
        period, first, last = period_text(kind, period), utc_from_us(first), utc_from_us(last)
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

def _entry(entries: dict, key, field: str, period, first, last, project) -> dict:
    entry = entries.get(key)
    if entry is None:
        entry = entries[key] = {
            field: period, **dict.fromkeys(TOKEN_FIELDS, 0), "totalTokens": 0, "totalCost": Decimal(0),
            "responses": 0, "modelBreakdowns": [], "_seen": {}, "_first": first, "_last": last,
            "_project": project, "_agents": set(), "_by_agent": {}, "_by_machine": {}, "_reasoning": 0}
    return entry


def _add(entry: dict, model: str, tokens: tuple[int, int, int, int], extra: int, cost: Decimal, responses: int,
         unpriced: bool, seen: tuple, first, last) -> None:
    """Add one (period, model, agent) group's numbers to a row (``extra``: output reported apart from
    ``outputTokens``, counted in ``totalTokens`` only, as ccusage does)."""
    for name, value in zip(TOKEN_FIELDS, tokens, strict=True):
        entry[name] += value
    entry["totalTokens"] += sum(tokens) + extra
    entry["totalCost"] += cost
    entry["responses"] += responses
    same = next((b for b in entry["modelBreakdowns"] if b["modelName"] == model), None)
    if same is None:
        same = {"modelName": model, **dict.fromkeys(TOKEN_FIELDS, 0), "cost": Decimal(0)}
        entry["modelBreakdowns"].append(same)
    for name, value in zip(TOKEN_FIELDS, tokens, strict=True):
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
    totals = {**dict(zip(TOKEN_FIELDS, tokens, strict=True)), "totalTokens": sum(tokens) + extra,
              "totalCost": float(sum(Decimal(item[5]) for item in items))}
    unpriced = sorted({item[0] for item in items if item[6] and item[0] not in UNPRICED_MODELS})
    if unpriced:
        totals["unpricedModels"] = unpriced
    return totals
