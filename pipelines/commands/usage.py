"""``sessionlake usage [REPORT]``: token and cost reports from the warehouse (ccusage-compatible --json)."""

from __future__ import annotations

import argparse
import json
from datetime import date

from resources.usage_reports import REPORTS


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value if "-" in value else f"{value[:4]}-{value[4:6]}-{value[6:]}")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD or YYYYMMDD)") from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("usage", help="token and cost report (daily by default)")
    p.add_argument("report", nargs="?", default="daily", choices=REPORTS)
    p.add_argument("--since", type=_date, help="first day included (in --timezone)")
    p.add_argument("--until", type=_date, help="last day included (in --timezone)")
    p.add_argument("--timezone", "-z", default="UTC", help="IANA zone for days and filters (default UTC)")
    p.add_argument("--project", help="only this project (its folder name; the leading '-' may be left out)")
    p.add_argument("--mode", default=None, choices=("auto", "calculate", "display"),
                   help="cost: auto (costUSD if present, else computed), calculate, display (costUSD only)")
    p.add_argument("--json", action="store_true", help="ccusage-compatible JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from dataclasses import replace

    from pipelines.cli import closest
    from resources.pricing import PriceTable
    from resources.settings import Settings
    from resources.state import StateStore
    from resources.usage_reports import ReportFilter, known_projects, usage_report

    settings = Settings.from_env()
    flt = ReportFilter(since=args.since, until=args.until, timezone=args.timezone, project=args.project,
                       mode=args.mode or settings.cost_mode)
    with StateStore.from_settings(settings).connect() as conn:
        if args.project is not None:
            known = known_projects(conn)
            project = args.project if args.project in known else f"-{args.project}"
            if project not in known:  # a typo would otherwise print an all-zero report
                print(f"sessionlake usage: no usage for project {args.project!r}; {closest(args.project, known)}",
                      file=sys.stderr)
                return 1
            flt = replace(flt, project=project)
        try:
            report = usage_report(conn, args.report, flt, PriceTable.load(settings.price_file))
        except Exception as exc:  # bad time zone, bad mode: one line, not a traceback
            print(f"sessionlake usage: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(args.report, report))
    for item in report["unpricedModels"]:
        print(f"warning: no price for model {item['model']} ({item['responses']} responses counted at $0); "
              "add it with SESSIONLAKE_PRICE_FILE", file=sys.stderr)
    return 0


def format_report(kind: str, report: dict) -> str:
    """A plain-text table of the report, with a totals line."""
    if kind == "blocks":
        header = ("block start (UTC)", "entries", "total tokens", "cost USD", "models")
        rows = [(b["startTime"][:16] + (" (active)" if b["isActive"] else ""), b["entries"], b["totalTokens"],
                 b["costUSD"], ", ".join(b["models"])) for b in report["blocks"]]
    else:
        list_name, field = next((k, v) for k, v in _FIELDS.items() if k in report)
        header = (field, "input", "output", "cache write", "cache read", "total tokens", "cost USD")
        rows = [(e[field], e["inputTokens"], e["outputTokens"], e["cacheCreationTokens"], e["cacheReadTokens"],
                 e["totalTokens"], e["totalCost"]) for e in report[list_name]]
    t = report["totals"]
    totals = ("total", t["inputTokens"], t["outputTokens"], t["cacheCreationTokens"], t["cacheReadTokens"],
              t["totalTokens"], t["totalCost"])
    if kind == "blocks":
        totals = ("total", "", t["totalTokens"], t["totalCost"], "")
    cells = [[_cell(v) for v in row] for row in [header, *rows, totals]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


_FIELDS = {"daily": "date", "weekly": "week", "monthly": "month", "sessions": "sessionId", "projects": "project",
           "models": "model", "branches": "gitBranch"}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
