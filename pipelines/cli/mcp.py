"""``sessionlake mcp``: the memory and the usage warehouse as an MCP server on stdio, for coding agents.

Tools (JSON schemas from the signatures below; each description says when to call it):
- ``recall(query, k, project?, agent?, since?, session?, role?)``: hits in the shape of
  `resources.memory.hits.describe`, each with a ``handle`` for ``context``. Every call leaves a
  provenance entry on each hit through the write-behind queue, naming the caller (`caller_of`).
- ``context(handle, before?, after?)``: the messages around a hit, from the memory, or from the
  archive when the memory no longer holds them.
- ``capture(text, tier?, session?)``: one record into the capture inbox, as ``sessionlake capture``
  appends it; returns its ULID.
- ``usage(period?, agent?, timezone?)``: today's, the active 5-hour block's and this month's tokens and
  cost, from the warehouse.
No resources and no prompts: everything an agent needs is a tool call with arguments, and clients
surface tools to the model on their own, resources and prompts only when a person picks them.

The server answers at once: the SDK is the only import before the first request, and LanceDB is
loaded by the first ``recall`` or ``context`` (a thread starts loading it as soon as the server is up).
Reads open a fresh table handle per call, so an ingest or maintenance run writing the same tables is
seen as of its last commit and never waited on. Provenance is flushed when the client closes stdin,
and when it stops the server with SIGTERM or SIGHUP. Nothing but protocol messages goes to stdout:
the SDK points fd 1 at stderr while it serves, and logs go to stderr.
"""

# No ``from __future__ import annotations``: the tools' annotations name the SDK's types, imported
# inside build_server so that loading this module costs nothing, and the SDK reads them at definition.
import argparse
import contextlib
import json
import os
import sys
import threading
from typing import Annotated, Any

from pipelines.cli.options import description

SERVER_NAME = "sessionlake"
SNIPPET_WIDTH = 240
CONTEXT_WIDTH = 1000
"""Characters of each context message (a long answer is cut, with "…")."""
FLUSH_TIMEOUT_SEC = 30.0
META_SESSION_KEYS = ("sessionID", "ai.opencode/sessionID", "threadId", "sessionId", "session_id")
"""``_meta`` keys of a tools/call that name the calling session (OpenCode, Codex, others), in order."""
CODEX_TURN_METADATA = "x-codex-turn-metadata"
"""Codex's per-call ``_meta`` entry (an object, or its JSON): ``session_id`` is the session."""
ENV_SESSION_KEYS = ("CLAUDE_CODE_SESSION_ID",)
AGENT_HELP = "only this agent: claude, codex, gemini, opencode, qwen"
SINCE_HELP = "only records at or after: 30m, 3h, 7d, 2w ago, or an ISO date"
"""Environment variables an agent sets for the MCP servers it starts, naming its session."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mcp", help="serve recall, context, capture and usage to coding agents (MCP over stdio)",
                       description=description(__doc__))
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import signal

    from resources.config.settings import Settings


    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="sessionlake mcp: %(message)s")
    os.environ.setdefault("LANCE_LOG", "error")  # Lance's deprecation warnings are noise on an agent's stderr
    settings = Settings.from_env()
    memory = Memory(settings, {k: os.environ[k] for k in ENV_SESSION_KEYS if os.environ.get(k)})

    def stopped(signum, _frame) -> None:
        # A client that stops the server with SIGTERM (or a closed terminal's SIGHUP) instead of closing
        # stdin: write the queued provenance, then end at once (the SDK's stdin reader would keep it alive).
        memory.close()
        os._exit(128 + signum)

    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, stopped)
    server = build_server(memory)
    try:
        server.run("stdio")
    finally:
        memory.close()
    return 0


class Memory:
    """The stores one server process uses, opened on first use and kept: the Lance store with its
    provenance queue, settings, and the environment it was started with."""

    def __init__(self, settings, env: dict[str, str]):
        self.settings = settings
        self.env = env
        self._store = None
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Load LanceDB and open the store in the background, so the first recall does not pay for it."""
        threading.Thread(target=self._warm, name="sessionlake-mcp-warm", daemon=True).start()

    def _warm(self) -> None:
        with contextlib.suppress(Exception):  # the first tool call reports it, in its own result
            self.store()

    def store(self):
        with self._lock:
            if self._store is None:
                from resources.memory.lance import LanceStore

                self.settings.check_storage()
                store = LanceStore.from_settings(self.settings)
                store.enable_provenance_queue()
                self._store = store
            return self._store

    def close(self) -> None:
        """Write every queued provenance entry (spilled to disk if the store refuses them)."""
        with self._lock:
            if self._store is not None and self._store.provenance_queue is not None:
                self._store.provenance_queue.flush(timeout=FLUSH_TIMEOUT_SEC)
                self._store.disable_provenance_queue(timeout=FLUSH_TIMEOUT_SEC)


def caller_of(meta: dict | None, env: dict[str, str], client_name: str | None) -> tuple[str, bool]:
    """Who is calling, for provenance: ``(name, is_session)``.

    The session the client names in the call's ``_meta`` (`META_SESSION_KEYS`, Codex's
    `CODEX_TURN_METADATA`), else the session the agent put in the server's environment
    (`ENV_SESSION_KEYS`), else the client's name from its ``clientInfo``, else ``mcp``. Metadata
    comes before the environment, which a server started from another agent's shell may inherit.
    """
    meta = meta or {}
    for key in META_SESSION_KEYS:
        if isinstance(meta.get(key), str) and meta[key]:
            return meta[key], True
    turn = meta.get(CODEX_TURN_METADATA)
    if isinstance(turn, str):
        try:
            turn = json.loads(turn)
        except ValueError:
            turn = None
    if isinstance(turn, dict) and isinstance(turn.get("session_id"), str) and turn["session_id"]:
        return turn["session_id"], True
    for key in ENV_SESSION_KEYS:
        if env.get(key):
            return env[key], True
    return (client_name or "mcp"), False


def build_server(memory: Memory):
    """The MCP server with its four tools over ``memory``."""
    from contextlib import asynccontextmanager

    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from pydantic import Field

    @asynccontextmanager
    async def lifespan(_server):
        memory.warm()
        yield {}

    server = MCPServer(
        SERVER_NAME,
        instructions="sessionlake keeps every past coding-agent session on this machine (Claude Code, Codex, "
                     "Gemini CLI, OpenCode, Qwen Code). Call recall before re-deriving something that may have "
                     "been decided or solved in an earlier session; call context with a hit's handle to read "
                     "what was said around it; capture to remember a fact for later sessions; usage for tokens "
                     "and cost.",
        lifespan=lifespan,
        log_level="WARNING",
    )

    def caller(ctx: Context) -> tuple[str, bool]:
        request = ctx.request_context
        params = request.session.client_params
        name = params.client_info.name if params is not None and params.client_info is not None else None
        return caller_of(dict(request.meta or {}), memory.env, name)

    @server.tool(description=(
        "Search every past prompt and answer of the user's coding-agent sessions (full text; hybrid with "
        "embeddings when configured). Use it to find earlier decisions, fixes, commands and explanations. "
        "Query syntax: plain words (any may match, exact phrase ranked first), \"an exact phrase\", prefix*, "
        "+required, -excluded, AND, OR, NOT. Each hit has agent, project, session, time (UTC), role, score, "
        "snippet (cue words in **bold**) and a handle: pass the handle to `context` to read the messages "
        "around it."))
    def recall(
        ctx: Context,
        query: Annotated[str, Field(description="words, \"a phrase\", prefix*, +must, -not, AND/OR/NOT")],
        k: Annotated[int, Field(ge=1, le=100, description="how many hits, best first")] = 10,
        project: Annotated[str | None, Field(
            description="only this project (its folder name, e.g. -home-me-app; the leading '-' may be left out)",
        )] = None,
        agent: Annotated[str | None, Field(description=AGENT_HELP)] = None,
        since: Annotated[str | None, Field(description=SINCE_HELP)] = None,
        session: Annotated[str | None, Field(description="only this session (its id, or the start of it)")] = None,
        role: Annotated[str | None, Field(description="only prompts (user) or answers (assistant)")] = None,
    ) -> dict[str, Any]:
        from pipelines.cli.projects import UnknownProject, resolve_projects
        from resources.memory.fts_query import QuerySyntaxError
        from resources.memory.hits import HIT_FIELDS, describe, parse_since, scope_filter
        from resources.memory.recall import recall as run_recall
        from resources.memory.schema import LanceTableUnreadable

        who, _ = caller(ctx)
        try:
            where = scope_filter(agent=agent, session=session, role=role)
            after = parse_since(since) if since else None
            store = memory.store()
            project = resolve_projects([project], store.projects(), "memory") if project else None
            hits = run_recall(store, query, who, k=k, project=project, since=after, where=where)
        except (QuerySyntaxError, ValueError, UnknownProject, LanceTableUnreadable) as exc:
            raise ToolError(str(exc)) from None
        from resources.memory.fts_query import parse_query

        words = parse_query(query).text
        return {"query": query, "caller": who,
                "hits": [describe(h, i, words, SNIPPET_WIDTH, fields=HIT_FIELDS) for i, h in enumerate(hits, 1)]}

    @server.tool(description=(
        "The messages around one recall hit, in the order they were written: `before` and `after` the hit "
        "in the same session. Pass the `handle` of a recall hit. Read from the memory, or from the archived "
        "session file when the memory no longer holds it (source says which)."))
    def context(
        handle: Annotated[str, Field(description="the handle of a recall hit")],
        before: Annotated[int, Field(ge=0, le=50, description="messages before the hit")] = 3,
        after: Annotated[int, Field(ge=0, le=50, description="messages after the hit")] = 3,
    ) -> dict[str, Any]:
        from resources.archive.packs import PackStore
        from resources.memory.hits import context_around
        from resources.memory.schema import LanceTableUnreadable

        try:
            found = context_around(memory.store(), handle, before, after,
                                   packs=lambda: PackStore.from_settings(memory.settings), width=CONTEXT_WIDTH)
        except (ValueError, LanceTableUnreadable) as exc:
            raise ToolError(str(exc)) from None
        if found is None:
            raise ToolError(f"no record for handle {handle!r} in the memory or the archive")
        return found

    @server.tool(description=(
        "Remember one piece of text for later sessions: it goes into the capture inbox (as `sessionlake "
        "capture` appends it) and is recallable once the capture sensor or the next ingest drains the inbox. "
        "Returns the record's ULID."))
    def capture(
        ctx: Context,
        text: Annotated[str, Field(min_length=1, description="what to remember, in full sentences")],
        tier: Annotated[str | None, Field(description="memory tier of the record (default: capture)")] = None,
        session: Annotated[str | None, Field(
            description="the session it belongs to (default: the calling session, when the client names it)",
        )] = None,
    ) -> dict[str, Any]:
        from pipelines.cli.capture import InputError, build_record
        from resources.capture.queue import CaptureQueue, CaptureRecordError

        who, is_session = caller(ctx)
        fields = argparse.Namespace(from_hook=False, text=text, tier=tier,
                                    session=session or (who if is_session else None))
        try:
            record = build_record(fields, read_stdin=None)
            record["source"] = f"mcp:{who}"
            ulid = CaptureQueue.from_settings(memory.settings).append(record)
        except (InputError, CaptureRecordError, OSError) as exc:
            raise ToolError(f"could not capture: {exc}") from None
        return {"ulid": ulid, "session": record.get("session_id"), "tier": record["tier"]}

    @server.tool(description=(
        "Tokens and cost of the user's coding agents from the usage warehouse: today, the active 5-hour "
        "billing block (with its end time), and this month. Use it when asked about spend or limits."))
    def usage(
        period: Annotated[str, Field(description="today, block, month, or all")] = "all",
        agent: Annotated[str | None, Field(description=AGENT_HELP)] = None,
        timezone: Annotated[str, Field(description="IANA zone that today and this month are in")] = "UTC",
    ) -> dict[str, Any]:
        try:
            return usage_summary(memory.settings, period, agent, timezone)
        except ValueError as exc:
            raise ToolError(str(exc)) from None

    return server


PERIODS = ("today", "block", "month", "all")


def usage_summary(settings, period: str = "all", agent: str | None = None, timezone: str = "UTC",
                  now=None) -> dict:
    """``{today, block, month}`` (those ``period`` asks for): tokens and cost from the warehouse, brought up
    to date from the agents' files first, as every report is (`resources.usage.refresh.fresh_warehouse`;
    ``warehouse`` says what that read, and when another process held the warehouse, the age of the copy read).

    ``today``/``month``: ``{since, tokens: {input, output, cacheCreation, cacheRead, total}, costUSD}``
    in ``timezone``; ``block``: the active 5-hour block (``startTime``, ``endTime``, tokens, cost) or None.
    """
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from resources.sources import AGENTS
    from resources.usage.pricing import PriceTable
    from resources.usage.refresh import fresh_warehouse
    from resources.usage.report_query import ReportFilter, ReportOptions
    from resources.usage.reports import usage_report

    if period not in PERIODS:
        raise ValueError(f"period {period!r}: expected one of {', '.join(PERIODS)}")
    if agent is not None and agent not in AGENTS:
        raise ValueError(f"agent {agent!r}: expected one of {', '.join(AGENTS)}")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"time zone {timezone!r} is not an IANA zone (like UTC or Europe/Paris)") from None
    now = now or datetime.now(UTC)
    today = now.astimezone(zone).date()
    prices = PriceTable.load(settings.price_file)
    base = ReportFilter(timezone=timezone, agent=agent, mode=settings.cost_mode)
    out: dict[str, Any] = {"agent": agent or "all", "timezone": timezone, "now": now.isoformat()}
    with fresh_warehouse(settings, prices=prices, command="sessionlake mcp") as fresh:
        conn = fresh.conn
        out["warehouse"] = {"filesRead": fresh.files_read, "unreadFiles": len(fresh.errors or []),
                            "heldBy": "another process" if fresh.held else None,
                            "storedAt": fresh.stored_at.isoformat() if fresh.stored_at else None}
        for name, kind, since in (("today", "daily", today), ("month", "monthly", today.replace(day=1))):
            if period in (name, "all"):
                from dataclasses import replace

                totals = usage_report(conn, kind, replace(base, since=since, until=today), prices)["totals"]
                out[name] = {"since": since.isoformat(), **_tokens(totals), "costUSD": totals["totalCost"]}
        if period in ("block", "all"):
            blocks = usage_report(conn, "blocks", base, prices, ReportOptions(active=True, now=now))["blocks"]
            active = next((b for b in blocks if b.get("isActive")), None)
            out["block"] = None if active is None else {
                "startTime": active["startTime"], "endTime": active["endTime"],
                **_tokens({**active["tokenCounts"], "totalTokens": active["totalTokens"]}),
                "costUSD": active["costUSD"]}
    return out


def _tokens(row: dict) -> dict:
    """A report row's or a block's token counts (blocks name the cache counts ``...InputTokens``)."""
    def count(name: str) -> int:
        return row.get(f"{name}Tokens", row.get(f"{name}InputTokens", 0))

    return {"tokens": {"input": count("input"), "output": count("output"), "cacheCreation": count("cacheCreation"),
                       "cacheRead": count("cacheRead"), "total": row["totalTokens"]}}
