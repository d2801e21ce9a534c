"""``sessionlake statusline``: the one line for Claude Code's ``statusLine`` setting, as ``ccusage statusline``.

stdin is Claude Code's status line JSON (``session_id``, ``transcript_path``, ``model``, and when
present ``cost.total_cost_usd``, ``context_window``, ``effort.level``). The command first brings the
warehouse up to date (resources/usage/refresh.py: the files of every agent that changed, the live
session's from its stored offset) and prints, for example::

    🤖 Opus 4 (high) | 💰 $0.23 session / $1.23 today / $0.45 block (2h 45m left) | 🔥 $0.12/hr | 🧠 25,000 (12%)

It runs on every prompt, so it imports neither Dagster nor LanceDB and waits at most `LOCK_WAIT_SEC`
for a warehouse another process holds (then it shows what is stored, and says how old on stderr).
Like ccusage, it reuses its last line for the same session while the transcript and the payload are
unchanged and the line is younger than ``--refresh-interval`` (1 s), without opening the warehouse.
On any error, an unknown or misplaced flag included, it prints a short fallback line (the reason goes
to stderr) and exits 0: a status line must never break the prompt.

Every flag ``ccusage statusline`` 20 takes is taken. ``-B/--visual-burn-rate`` adds ccusage's burn
status (🟢 Normal, ⚠️ Moderate, 🚨 High) to the burn rate. ``-O/--offline``, ``--no-offline``,
``--config`` and ``-d/--debug`` are accepted and do nothing here (prices ship with sessionlake), as are
``--context-low-threshold`` and ``--context-medium-threshold`` (they colour ccusage's context share;
this line has no colour). The costs, the day and the block are Claude Code's (``--agent`` names
another agent).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import PurePath
from typing import NoReturn

from pipelines.cli.options import description
from resources.times import as_utc

LOCK_WAIT_SEC = 1.0
MAX_PAYLOAD_BYTES = 1 << 20
CONTEXT_LIMIT = 200_000
CONTEXT_LIMIT_1M = 1_000_000
COST_SOURCES = ("auto", "sessionlake", "ccusage", "cc", "both")
BURN_VISUALS = ("off", "emoji", "text", "emoji-text")
FALLBACK = "💰 usage unavailable"
BURN_STATUS = ((2000, "🟢", "Normal"), (5000, "⚠️", "Moderate"), (math.inf, "🚨", "High"))
"""ccusage's burn status by input+output tokens per minute of the active block: below 2,000, below 5,000, above."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("statusline", help="one status line for Claude Code's statusLine setting (hook JSON on stdin)",
                       description=description(__doc__))
    p.add_argument("-z", "--timezone", help="IANA zone of 'today' (default: the system's; 'local' too)")
    p.add_argument("--agent", default="claude", help="whose usage the costs and block count (default claude)")
    p.add_argument("--cost-source", choices=COST_SOURCES, default="auto",
                   help="session cost: auto (Claude Code's when it sends one, else the warehouse's), "
                        "sessionlake (or ccusage: the warehouse's), cc (Claude Code's), both")
    p.add_argument("-B", "--visual-burn-rate", choices=BURN_VISUALS, default="off",
                   help="burn status beside the burn rate: off, emoji, text, emoji-text (default off)")
    p.add_argument("--refresh-interval", type=float, default=1.0,
                   help="seconds a line is reused while nothing changed (default 1, as ccusage)")
    p.add_argument("--cache", dest="cache", action="store_true", default=True, help="reuse an unchanged line (default)")
    p.add_argument("--no-cache", dest="cache", action="store_false", help="always read the warehouse")
    p.add_argument("--no-refresh", dest="refresh", action="store_false",
                   help="show what is stored, without reading new and changed session files first")
    for flags, kwargs in (
        (("-O", "--offline"), {"action": "store_true"}), (("--no-offline",), {"action": "store_true"}),
        (("--config",), {"metavar": "PATH"}), (("-d", "--debug"), {"action": "store_true"}),
        (("--context-low-threshold",), {"type": float, "metavar": "PCT"}),
        (("--context-medium-threshold",), {"type": float, "metavar": "PCT"}),
    ):
        p.add_argument(*flags, **kwargs, help="accepted for ccusage compatibility; no effect here")
    p.error = _parse_error  # an unusable flag or value still gets a line and exit 0
    p.set_defaults(handler=run, accepts_unknown=True, manages_home=True)  # a home that cannot be used: still a line


def _parse_error(message: str) -> NoReturn:
    print(f"sessionlake statusline: {message}", file=sys.stderr)
    print(FALLBACK)
    sys.exit(0)


def run(args: argparse.Namespace) -> int:
    payload: dict = {}
    if getattr(args, "unknown", None):
        _parse_error(f"unrecognized arguments: {' '.join(args.unknown)}")
    try:
        payload = _read_payload()
        line = cached_status_line(payload, args)
    except Exception as exc:  # whatever went wrong, the prompt gets a line and exit 0
        print(f"sessionlake statusline: {type(exc).__name__}: {exc}", file=sys.stderr)
        model = _model_label(payload)
        line = f"🤖 {model} | {FALLBACK}" if model else FALLBACK
    print(line)
    return 0


def _read_payload() -> dict:
    if sys.stdin is None or sys.stdin.isatty():
        return {}
    data = sys.stdin.buffer.read(MAX_PAYLOAD_BYTES)
    payload = json.loads(data) if data.strip() else {}
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object on stdin, got a JSON {type(payload).__name__}")
    return payload


def cached_status_line(payload: dict, args: argparse.Namespace) -> str:
    """`status_line`, or the line cached for the same session, transcript and payload (see the module doc)."""
    from resources.config.private_home import make_private
    from resources.config.settings import Settings
    from resources.usage.line_cache import LineCache

    settings = Settings.from_env()
    make_private(settings)
    transcript = payload.get("transcript_path") if isinstance(payload.get("transcript_path"), str) else None
    try:
        st = os.stat(transcript) if transcript else None
    except OSError:
        st = None
    shown = {k: payload.get(k) for k in ("model", "effort", "cost", "context_window")}
    shown["cost"] = shown["cost"].get("total_cost_usd") if isinstance(shown["cost"], dict) else None
    fingerprint = [st.st_size if st else None, st.st_mtime_ns if st else None, args.cost_source, args.timezone,
                   args.agent, args.visual_burn_rate, json.dumps(shown, sort_keys=True, default=str)]
    cache = LineCache(settings.home / "statusline")
    key = str(payload.get("session_id") or transcript or "")
    if args.cache and (line := cache.get(key, fingerprint, args.refresh_interval)) is not None:
        return line
    line = status_line(payload, args.timezone, args.cost_source, refresh=args.refresh, agent=args.agent,
                       burn=args.visual_burn_rate)
    if args.cache:
        cache.put(key, fingerprint, line)
    return line


def status_line(payload: dict, timezone: str | None = None, cost_source: str = "auto",
                now: datetime | None = None, refresh: bool = True, agent: str = "claude", burn: str = "off") -> str:
    """The line for ``payload``, from ``agent``'s rows of the warehouse in ``SESSIONLAKE_HOME`` (brought up to
    date first)."""
    from resources.config.settings import Settings
    from resources.usage.now import live_usage
    from resources.usage.pricing import PriceTable
    from resources.usage.refresh import fresh_warehouse

    settings = Settings.from_env()
    now = now or datetime.now(UTC)
    local = now.astimezone(_zone(timezone))
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    transcript = payload.get("transcript_path") if isinstance(payload.get("transcript_path"), str) else None
    session_id = payload.get("session_id") if isinstance(payload.get("session_id"), str) else None
    if session_id is None and transcript:
        session_id = PurePath(transcript).stem
    with fresh_warehouse(settings, refresh=refresh, lock_wait_sec=LOCK_WAIT_SEC,
                         prices=PriceTable.load(settings.price_file), command="sessionlake statusline") as fresh:
        live = live_usage(fresh.conn, session_id, day_start, day_start + timedelta(days=1), now, settings.cost_mode,
                          agent=agent)
    return format_line(payload, live, now, cost_source, burn)


def format_line(payload: dict, live, now: datetime, cost_source: str = "auto", burn: str = "off") -> str:
    """ccusage's layout: model | costs and block | burn rate (only with one) | context."""
    parts = [f"🤖 {_model_label(payload) or 'Claude'}"]
    money = f"💰 {_session_cost(payload, live.session_cost, cost_source)} session / ${live.day_cost:.2f} today / "
    block = live.block
    if block is None:
        money += "No active block"
    else:
        end = as_utc(block["endTime"])
        money += f"${block['costUSD']:.2f} block ({_duration(end - now)} left)"
    parts.append(money)
    if block is not None and block["burnRate"] is not None:
        rate = block["burnRate"]
        _, emoji, word = next(s for s in BURN_STATUS if rate["tokensPerMinuteForIndicator"] < s[0])
        shown = [f"${rate['costPerHour']:.2f}/hr"]
        shown += [emoji] if burn in ("emoji", "emoji-text") else []
        shown += [f"({word})"] if burn in ("text", "emoji-text") else []
        parts.append(f"🔥 {' '.join(shown)}")
    parts.append(f"🧠 {_context(payload, live.context_tokens)}")
    return " | ".join(parts)


def _zone(name: str | None):
    from zoneinfo import ZoneInfo

    from resources.usage.zone import resolve_zone

    return ZoneInfo(resolve_zone(name))


def _model_label(payload: dict) -> str | None:
    model = payload.get("model") if isinstance(payload, dict) else None
    name = model.get("display_name") or model.get("id") if isinstance(model, dict) else model
    if not isinstance(name, str) or not name:
        return None
    effort = payload.get("effort")
    level = effort.get("level") if isinstance(effort, dict) else None
    return f"{name} ({level})" if isinstance(level, str) and level else name


def _session_cost(payload: dict, warehouse_cost: float, source: str) -> str:
    cost = payload.get("cost")
    cc = cost.get("total_cost_usd") if isinstance(cost, dict) else None
    cc = float(cc) if isinstance(cc, int | float) and not isinstance(cc, bool) else None
    if source == "both":
        return f"(${cc or 0:.2f} cc / ${warehouse_cost:.2f} sessionlake)"
    if source == "cc" or (source == "auto" and cc is not None):
        return f"${cc or 0:.2f}"
    return f"${warehouse_cost:.2f}"


def _duration(left: timedelta) -> str:
    """Whole minutes left, floored as ccusage does: ``2h 45m`` or ``45m``."""
    minutes = max(0, math.floor(left.total_seconds() / 60))
    return f"{minutes // 60}h {minutes % 60}m" if minutes >= 60 else f"{minutes}m"


def _context(payload: dict, last_response_tokens: int | None) -> str:
    """Tokens in context and their share of the window: Claude Code's ``context_window`` when it sends
    one, else the session's last response in the warehouse."""
    window = payload.get("context_window") if isinstance(payload.get("context_window"), dict) else {}
    usage = window.get("current_usage")
    size = window.get("context_window_size")
    if not isinstance(size, int) or size <= 0:
        model = payload.get("model") if isinstance(payload.get("model"), dict) else {}
        big = "[1m]" in str(model.get("id", "")).lower() or "1m" in str(model.get("display_name", "")).lower()
        size = CONTEXT_LIMIT_1M if big else CONTEXT_LIMIT
    if isinstance(usage, dict):
        tokens = sum(v for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
                     if isinstance(v := usage.get(k), int))
    elif last_response_tokens is not None:
        tokens = last_response_tokens
    else:
        return "N/A"
    share = window.get("used_percentage")
    if not isinstance(share, int | float) or isinstance(share, bool):
        share = tokens / size * 100
    return f"{tokens:,} ({math.floor(share + 0.5)}%)"
