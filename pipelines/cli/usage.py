"""``sessionlake usage [AGENT] [REPORT]``: token and cost reports from the warehouse, as ``ccusage`` 20.

``--json`` prints what ccusage 20 prints for the same command: ``sessionlake usage daily --json`` is
``ccusage daily --json`` (all agents: ``period``, ``agent``, ``metadata.agents``), and
``sessionlake usage claude daily --json`` is ``ccusage claude daily --json`` (``date``, ``sessions[]``
with ``firstActivity``; Claude Code's rows only); ``codex``, ``gemini``, ``opencode`` and ``qwen`` give
those agents' own reports (``ccusage codex daily --json``, ...). ``--agent A`` keeps one agent's rows,
``--by-agent`` adds a per-agent breakdown to every row. The shapes are described in resources/usage/reports.py,
codex_report.py and block_report.py.

Days (and ``--since``/``--until``/``--last``) are in the system's time zone unless ``-z`` names one.
Every flag ccusage 20.0.24 takes is taken: implemented, or accepted and ignored where it has no meaning
here (`_IGNORED`, listed in ``--help``). A flag given to a report it does not apply to (`_APPLIES`:
``--active`` on ``daily``, ``--last`` on ``session``, ...) is an error, exit 2, as in ccusage.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta

from pipelines.cli import exits
from pipelines.cli.options import add_project_option, add_session_option, hidden_alias, positive
from pipelines.cli.table import format_table
from resources.usage.blocks import BLOCK_HOURS
from resources.usage.report_kinds import (
    AGENT_REPORTS,
    DEFAULT_START_OF_WEEK,
    ORDERS,
    PERIOD_REPORTS,
    REPORTS,
    VIEWS,
    WEEKDAYS,
)

_INSTANCES = object()
"""The value of a bare ``-i``: ccusage's short form of --instances (``-i ID`` is ``--session ID``)."""


def _json_text(report) -> str:
    """``report`` as JSON, two-space indented, keys sorted. orjson writes it 25x faster than ``json`` (whose
    indented output is pure Python: 20 ms for a 20,000-session daily report) and numbers as JavaScript
    does, as ccusage prints them (``0.00001``, not ``1e-05``); ``json`` writes what orjson would write
    otherwise (non-ASCII text stays escaped, as before) or cannot (a non-string key)."""
    import orjson

    try:
        text = orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        text = ""
    return text if text and text.isascii() else json.dumps(report, indent=2, sort_keys=True)


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value if "-" in value else f"{value[:4]}-{value[4:6]}-{value[6:]}")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD or YYYYMMDD)") from exc


def _aliases(value: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[0].strip() for pair in pairs):
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=ALIAS[,NAME=ALIAS...]")
    return {name.strip(): alias.strip() for name, alias in pairs}


_IGNORED = (
    (("-O", "--offline"), {"action": "store_true"}, "prices ship with sessionlake; it never fetches them"),
    (("--no-offline",), {"action": "store_true"}, "prices ship with sessionlake; it never fetches them"),
    (("--compact",), {"action": "store_true"}, "the table has one layout"),
    (("--color",), {"action": "store_true"}, "the table has no colour"),
    (("--no-color",), {"action": "store_true"}, "the table has no colour"),
    (("-d", "--debug"), {"action": "store_true"}, "no pricing-mismatch samples"),
    (("--debug-samples",), {"type": int, "metavar": "N"}, "no pricing-mismatch samples"),
    (("--config",), {"metavar": "PATH"}, "settings are SESSIONLAKE_* variables"),
    (("--single-thread",), {"action": "store_true"}, "reports read the warehouse"),
    (("--all",), {"action": "store_true"}, "every agent is included by default"),
)
"""ccusage 20's flags that have no meaning here: accepted (so a ccusage command line runs) and ignored."""

PERIODS = frozenset(PERIOD_REPORTS)
BLOCKS_ONLY = frozenset({"blocks"})
# Where each option applies: (reports, views) it is accepted for; anything else is a misplaced flag (exit 2).
_APPLIES = {
    "active": ("-a/--active", BLOCKS_ONLY, None),
    "recent": ("-r/--recent", BLOCKS_ONLY, None),
    "token_limit": ("-t/--token-limit", BLOCKS_ONLY, None),
    "session_length": ("-n/--session-length", BLOCKS_ONLY, None),
    "instances": ("-i/--instances", PERIODS, ("all", "claude")),
    "project_aliases": ("--project-aliases", PERIODS, ("all", "claude")),
    "start_of_week": ("-w/--start-of-week", frozenset({"weekly"}), None),
    "last": ("--last", PERIODS, None),
    "session": ("--session/--id", frozenset({"session"}), ("all", "claude")),
    "sections": ("--sections", PERIODS | {"session"}, ("all",)),
    "by_agent": ("--by-agent", frozenset(REPORTS) - BLOCKS_ONLY, ("all",)),
    "speed": ("--speed", frozenset(REPORTS), ("codex",)),
    "project": ("-p/--project", frozenset(REPORTS) - BLOCKS_ONLY, ("all", "claude")),  # windows span projects
    "agent": ("--agent", frozenset(REPORTS), ("all", "claude")),
}


def _token_limit(value: str) -> str:
    if value != "max" and not value.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: expected a number of tokens or 'max'")
    return value


def _sections(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    wrong = [name for name in names if name not in (*PERIOD_REPORTS, "session")]
    if not names or wrong:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a comma-separated list of daily, weekly, monthly, "
                                         "session")
    return list(dict.fromkeys(names))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "usage", help="token and cost report (daily by default)",
        description="Token and cost report, as ccusage 20 prints it. 'claude', 'codex', 'gemini', 'opencode' or "
                    "'qwen' first gives that agent's own report and JSON (ccusage claude daily, ...). Days are "
                    "in the system's time zone unless -z names another.",
        epilog="Accepted for ccusage compatibility and ignored: "
               + "; ".join(f"{'/'.join(flags)} ({why})" for flags, _, why in _IGNORED) + ".")
    p.add_argument("words", nargs="*", metavar="[AGENT] REPORT",
                   help=f"report: {', '.join(REPORTS)} (default daily); AGENT one of {', '.join(VIEWS[1:])} "
                        "for that agent's own report")
    p.add_argument("-s", "--since", type=_date, help="first day included, YYYYMMDD or YYYY-MM-DD (in --timezone)")
    p.add_argument("-u", "--until", type=_date, help="last day included (in --timezone)")
    p.add_argument("--last", type=positive(int), metavar="N",
                   help="daily/weekly/monthly: only the last N periods (1: today, this week, this month)")
    p.add_argument("-z", "--timezone", default=None,
                   help="IANA zone for days and filters (default, or 'local': the system's)")
    add_project_option(p, "only this project")
    p.add_argument("--agent", help="only this agent's usage: claude, codex, gemini, opencode, qwen "
                                   "(default: all; blocks: claude)")
    p.add_argument("--by-agent", action="store_true",
                   help="a breakdown per agent under each row (JSON: agents[], as ccusage --by-agent)")
    p.add_argument("--sections", type=_sections, metavar="LIST",
                   help="several of daily, weekly, monthly, session in one report (JSON: one list each)")
    p.add_argument("--user", help="only rows pushed by this user (a team deployment)")
    p.add_argument("--machine", help="only rows of this machine (synced, or pushed to a team deployment): its name "
                                     "or user@machine, as the machine report lists them")
    p.add_argument("--by-machine", action="store_true",
                   help="a breakdown per machine under each row (JSON: machines[])")
    p.add_argument("-m", "--mode", default=None, choices=("auto", "calculate", "display"),
                   help="cost: auto (costUSD if present, else computed), calculate, display (costUSD only)")
    p.add_argument("--no-cost", action="store_true", help="no cost figures (JSON: no totalCost, costUSD, cost)")
    p.add_argument("--speed", choices=("auto", "standard", "fast"),
                   help="codex: accepted as ccusage's; costs follow the speed each response recorded")
    p.add_argument("-o", "--order", choices=ORDERS,
                   help="row order (default: periods and blocks oldest first, sessions highest cost first)")
    p.add_argument("-w", "--start-of-week", choices=WEEKDAYS,
                   help="weekly: first day of a week (default monday for all agents, sunday for one, as ccusage)")
    p.add_argument("--instances", action="store_true",
                   help="daily/weekly/monthly rows per project (-i alone means this, as in ccusage)")
    p.add_argument("--project-aliases", type=_aliases, default=None,
                   help="table names for projects: NAME=ALIAS,... (JSON keeps folder names, as ccusage does)")
    p.add_argument("-a", "--active", action="store_true", help="blocks: only the active block")
    p.add_argument("-r", "--recent", action="store_true", help="blocks: those of the last 3 days")
    p.add_argument("-t", "--token-limit", type=_token_limit, metavar="TOKENS|max",
                   help="blocks: the active block's projection against this limit (max: the largest block)")
    p.add_argument("-n", "--session-length", type=positive(float), metavar="HOURS",
                   help=f"blocks: window length in hours (default {BLOCK_HOURS})")
    p.add_argument("-b", "--breakdown", action="store_true", help="table: a line per model under each row")
    add_session_option(p, "session report: the responses of this one session")
    hidden_alias(p, "-i", "--id", dest="session", nargs="?", const=_INSTANCES)  # ccusage's spellings
    p.add_argument("-j", "--json", action="store_true", help="ccusage 20's JSON")
    p.add_argument("--no-refresh", dest="refresh", action="store_false",
                   help="report what is stored, without reading new and changed session files first")
    for flags, kwargs, why in _IGNORED:
        p.add_argument(*flags, **kwargs, help=f"accepted, ignored: {why}")
    p.set_defaults(handler=run, parser=p)


def _view_and_report(parser: argparse.ArgumentParser, words: list[str]) -> tuple[str, str]:
    view = "all"
    if words and words[0] in VIEWS:
        view, words = words[0], words[1:]
    reports = REPORTS if view == "all" else AGENT_REPORTS[view]
    if len(words) > 1 or (words and words[0] not in reports):
        parser.error(f"expected {'' if view == 'all' else view + ' '}REPORT with REPORT one of "
                     f"{', '.join(reports)}; got {' '.join(words)!r}")
    return view, words[0] if words else "daily"


def _check_placement(parser: argparse.ArgumentParser, args: argparse.Namespace, view: str, kind: str) -> None:
    """A flag given to a report it does not apply to is an error, as in ccusage."""
    for dest, (flag, kinds, views) in _APPLIES.items():
        if getattr(args, dest) in (None, False, []):
            continue
        if kind not in kinds or (views is not None and view not in views):
            where = kind if view == "all" else f"{view} {kind}"
            parser.error(f"{flag} does not apply to the {where} report")
    if args.last is not None and (args.since or args.until):
        parser.error("--last cannot be combined with --since or --until")
    if args.since and args.until and args.since > args.until:
        parser.error(f"--since {args.since} is later than --until {args.until}")


def _last_since(kind: str, n: int, today: date, start_of_week: str) -> date:
    """The first day of the last ``n`` periods of ``kind`` up to ``today`` (ccusage's ``--last``)."""
    if kind == "daily":
        return today - timedelta(days=n - 1)
    if kind == "weekly":
        week_start = today - timedelta(days=(today.isoweekday() - WEEKDAYS.index(start_of_week) - 1) % 7)
        return week_start - timedelta(weeks=n - 1)
    months = today.year * 12 + today.month - 1 - (n - 1)
    return date(months // 12, months % 12 + 1, 1)


def run(args: argparse.Namespace) -> int:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from resources.config.settings import Settings
    from resources.sources import AGENTS
    from resources.usage.zone import resolve_zone

    view, kind = _view_and_report(args.parser, args.words)
    if args.session is _INSTANCES:  # ccusage's -i: --instances on period reports, --id ID on sessions
        if kind == "session":
            args.parser.error("-i/--id needs a session id")
        args.session, args.instances = None, True
    _check_placement(args.parser, args, view, kind)
    if args.agent is not None and args.agent not in AGENTS:
        args.parser.error(f"--agent {args.agent!r}: expected one of {', '.join(AGENTS)}")
    try:
        zone = resolve_zone(args.timezone)
    except ValueError as exc:
        print(f"sessionlake usage: -z/--timezone: {exc}", file=sys.stderr)
        return exits.BAD_USAGE
    settings = Settings.from_env()
    since = args.since
    if args.last is not None:
        start_of_week = args.start_of_week or DEFAULT_START_OF_WEEK.get(view, "sunday")
        since = _last_since(kind, args.last, datetime.now(ZoneInfo(zone)).date(), start_of_week)
    ahead = None
    if args.refresh and not settings.state_path.exists():  # a new home: every model it meets needs a price
        from resources.usage.prices_ahead import PricesAhead

        ahead = PricesAhead.start()
    try:
        stored = StoredReports(settings, args, view, kind, zone, since)
        report = stored.get()
        if report is None:
            report = _report(args, settings, view, kind, zone, since, stored, ahead)
    finally:
        if ahead is not None:
            ahead.close()
    sys.stdout.write(report.stdout)
    sys.stderr.write(report.stderr)
    return report.code


class StoredReports:
    """The stored report for this command line (resources/usage/report_cache.py): which question it asks,
    the session files it sees (walked once, and handed to the refresh on a miss), and whether it may be
    stored (not ``blocks``, which depends on the clock; not with SESSIONLAKE_REPORT_CACHE=off)."""

    def __init__(self, settings, args: argparse.Namespace, view: str, kind: str, zone: str, since: date | None):
        from pathlib import Path

        from resources.sources import found_sources, walk_all
        from resources.usage import report_cache

        self.settings = settings
        self.cache = report_cache.ReportCache(settings.home / "reports")
        self.files = list(walk_all(found_sources(settings))) if args.refresh else None
        self.listing = None if self.files is None else report_cache.listing_digest(self.files)
        self.question = None
        if settings.report_cache and kind != "blocks":
            options = {k: v for k, v in vars(args).items() if k not in ("handler", "parser")}
            self.question = report_cache.question_key(
                report_cache.code_stamp(Path(report_cache.__file__).parents[1], Path(__file__).parent),
                repr(settings), report_cache.file_stat(settings.price_file) if settings.price_file else None,
                view, kind, zone, since, options)

    def get(self):
        """The stored report, when this question was answered for the same files and warehouse."""
        from resources.usage.report_cache import warehouse_stat

        if self.question is None:
            return None
        return self.cache.get(self.question, self.listing, warehouse_stat(self.settings.state_path))

    def refreshed_at(self) -> list | None:
        """The warehouse stat at which every file of this listing was last read in (the refresh can skip
        asking which files changed while the warehouse still has it), or None."""
        return None if self.listing is None else self.cache.refreshed_at(self.listing)

    def put(self, report, held_stat: list | None) -> None:
        """Keep ``report``, computed from a warehouse that had ``held_stat`` while the report held it, if
        closing it left that unchanged."""
        from resources.usage.report_cache import warehouse_stat

        if held_stat is None or warehouse_stat(self.settings.state_path) != held_stat:
            return
        if self.listing is not None:
            self.cache.mark_refreshed(self.listing, held_stat)
        if self.question is not None:
            self.cache.put(self.question, self.listing, held_stat, report)


def _report(args: argparse.Namespace, settings, view: str, kind: str, zone: str, since: date | None,
            stored: StoredReports, prices_ahead=None):
    """Compute the report from the warehouse (brought up to date first), and store it when it may be reused;
    ``prices_ahead``: the price database being loaded in another process (`resources.usage.prices_ahead`)."""
    from dataclasses import replace

    from pipelines.cli.projects import resolve_projects
    from pipelines.cli.sync import machines_line
    from resources.sync.machines import other_machines
    from resources.usage.pricing import PriceTable
    from resources.usage.refresh import fresh_warehouse
    from resources.usage.report_cache import CachedReport
    from resources.usage.report_query import ReportFilter, ReportOptions
    from resources.usage.reports import known_projects, session_usage, usage_report

    try:
        flt = ReportFilter(since=since, until=args.until, timezone=zone,
                           mode=args.mode or settings.cost_mode, agent=args.agent, user=args.user,
                           machine=args.machine)
        opts = ReportOptions(view=view, order=args.order, start_of_week=args.start_of_week,
                             instances=args.instances, by_agent=args.by_agent, by_machine=args.by_machine,
                             active=args.active, recent=args.recent, block_hours=args.session_length or BLOCK_HOURS,
                             token_limit=args.token_limit)
        prices = PriceTable.load(settings.price_file, database=prices_ahead)
        with fresh_warehouse(settings, refresh=args.refresh, prices=prices, command="sessionlake usage",
                             files=stored.files, refreshed_at=stored.refreshed_at()) as fresh:
            conn = fresh.conn
            if args.project:  # a typo would otherwise print an all-zero report
                flt = replace(flt, projects=tuple(resolve_projects(args.project, known_projects(conn), "usage")))
            if args.session is not None:
                report = session_usage(conn, args.session, flt, prices)
            elif args.sections:
                report = {}
                for section in args.sections:
                    report.update(usage_report(conn, section, flt, prices, opts))
            else:
                report = usage_report(conn, kind, flt, prices, opts)
            synced = other_machines(conn)
            held_stat = fresh.settled_stat()
    except ValueError as exc:  # bad mode, bad price file: one line, not a traceback
        return CachedReport("", f"sessionlake usage: {exc}\n", exits.BAD_USAGE)
    errors = []
    if report is None:  # nothing found: exit 1 (ccusage exits 0), after the null ccusage prints
        errors.append(f"sessionlake usage: no responses for session {args.session!r}")
    if args.no_cost:
        strip_cost(report)
    if args.json or report is None:
        out = [_json_text(report)]
    elif args.session is not None:
        out = [format_session(report)]
    else:
        out = [format_report(section, _section(report, section, view), breakdown=args.breakdown,
                             aliases=args.project_aliases, by_agent=args.by_agent, by_machine=args.by_machine)
               for section in args.sections or [kind]]
    errors += [f"warning: no price for model {model} (its responses are counted at $0); add it with "
               "SESSIONLAKE_PRICE_FILE" for model in (report or {}).get("totals", {}).get("unpricedModels", [])]
    if synced:
        errors.append(machines_line(synced))
    done = CachedReport("".join(f"{text}\n" for text in out), "".join(f"{line}\n" for line in errors),
                        exits.FAILED if report is None or fresh.errors else exits.DONE)
    if not fresh.errors and not fresh.held:
        stored.put(done, held_stat)
    return done


_COST_FIELDS = ("totalCost", "costUSD", "cost")


def strip_cost(value) -> None:
    """Drop every cost field, at any depth, as ccusage's ``--no-cost`` does."""
    if isinstance(value, dict):
        for name in _COST_FIELDS:
            value.pop(name, None)
        for child in value.values():
            strip_cost(child)
    elif isinstance(value, list):
        for child in value:
            strip_cost(child)


def _section(report: dict, kind: str, view: str) -> dict:
    """One report's list (and the totals) out of a ``--sections`` report."""
    name = {"session": "session" if view == "all" else "sessions"}.get(kind, kind)
    return {name: report[name], "totals": report["totals"]} if name in report else report


_LABELS = ("date", "week", "month", "period", "sessionId", "project", "model", "gitBranch", "user", "machine")


def format_report(kind: str, report: dict, *, breakdown: bool = False, aliases: dict | None = None,
                  by_agent: bool = False, by_machine: bool = False) -> str:
    """A plain-text table of the report, with a totals line (``breakdown``: a line per model;
    ``by_agent``: a line per agent; ``by_machine``: a line per machine)."""
    aliases = aliases or {}
    if kind == "blocks":
        header = ("block start (UTC)", "entries", "total tokens", "cost USD", "models")
        rows = [(_block_label(b), b["entries"], b["totalTokens"], _cost(b), ", ".join(b["models"]))
                for b in report["blocks"]]
        t = report["totals"]
        return format_table(header, rows, ("total", "", t["totalTokens"], _cost(t), ""))
    if "projects" in report and isinstance(report["projects"], dict):  # --instances
        groups = list(report["projects"].items())
    else:
        groups = [(None, next(v for k, v in report.items() if k != "totals"))]
    field = next((f for f in _LABELS if groups and groups[0][1] and f in groups[0][1][0]), "date")
    label = {"daily": "date", "weekly": "week", "monthly": "month", "session": "session"}.get(kind, field)
    header = (label, "input", "output", "cache write", "cache read", "total tokens", "cost USD")
    rows = []
    for project, entries in groups:
        if project is not None:
            rows.append((f"[{aliases.get(project, project)}]", "", "", "", "", "", ""))
        for e in entries:
            label = aliases.get(e[field], e[field]) if field == "project" else e[field]
            rows.append((label, *_token_cells(e), e["totalTokens"], _cost(e)))
            if by_agent:
                rows.extend((f"  [{a['agent']}]", *_token_cells(a), a["totalTokens"], _cost(a))
                            for a in e.get("agents", []))
            if by_machine:
                rows.extend((f"  [{m['machine']}]", *_token_cells(m), m["totalTokens"], _cost(m))
                            for m in e.get("machines", []))
            if breakdown:
                rows.extend((f"  - {b['modelName']}", *_token_cells(b), sum(_token_cells(b)), _cost(b))
                            for b in e.get("modelBreakdowns", []))
                rows.extend((f"  - {name}", *_token_cells(m), m["totalTokens"], "")  # Codex: models{} has no cost
                            for name, m in e.get("models", {}).items())
    t = report["totals"]
    return format_table(header, rows, ("total", *_token_cells(t), t["totalTokens"], _cost(t)))


def format_session(report: dict) -> str:
    header = ("time (UTC)", "model", "input", "output", "cache write", "cache read", "cost USD")
    rows = [(e["timestamp"][:19], e["model"], *_token_cells(e), _cost(e)) for e in report["entries"]]
    return format_table(header, rows, ("total", "", "", "", "", report["totalTokens"], _cost(report)))


def _cost(entry: dict) -> float | str:
    """A row's cost, whatever the shape names it (``totalCost``, Codex's ``costUSD``, a model's ``cost``);
    blank under ``--no-cost``."""
    return next((entry[name] for name in ("totalCost", "costUSD", "cost") if name in entry), "")


def _token_cells(entry: dict) -> tuple[int, int, int, int]:
    return entry["inputTokens"], entry["outputTokens"], entry["cacheCreationTokens"], entry["cacheReadTokens"]


def _block_label(block: dict) -> str:
    if block["isGap"]:
        return f"{block['startTime'][:16]} (gap)"
    return block["startTime"][:16] + (" (active)" if block["isActive"] else "")
