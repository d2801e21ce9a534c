"""``sessionlake recall "query"``: ranked prompts and answers from every ingested session.

Each hit shows rank, score, agent, project, session, time, role and a snippet with the cue words
highlighted (bold on a terminal, ``**word**`` otherwise and in ``--json``). Every hit gets a
provenance entry naming ``--caller`` (default ``cli``), written by the write-behind queue
(`resources.memory.provenance_queue`) while the hits are printed; the command returns once it has
landed, or has been spilled to ``provenance-overflow/`` when the store refused it. ``--project``
names are resolved as every command resolves them: an unknown one exits 1 with the closest names.

The query takes plain words, ``"a phrase"``, ``prefix*``, ``+must``, ``-not``, ``AND``/``OR``/``NOT``
(`resources.memory.fts_query`); one it cannot run exits 2 with a line saying why. ``--agent``,
``--session``, ``--role`` and ``--since`` (``7d``, ``3h``, a date) narrow it; ``--context N`` adds
the N messages before and after each hit. ``--json`` prints a list of hits in the documented shape
of `resources.memory.hits.describe` (stdout holds only that), ``--fields minimal`` keeps
`MINIMAL_FIELDS`, and ``--max-tokens`` shortens snippets and context until the output fits, never
dropping a hit. Exit status: 0 hits found, 1 none (or no memory yet), 2 a query, scope or option
that cannot be used.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from pipelines.cli import exits
from pipelines.cli.options import add_project_option, add_session_option, description, hidden_alias, positive

SNIPPET_WIDTH = 160
CONTEXT_WIDTH = 240
"""Characters of each --context message in the output."""
PROVENANCE_WAIT_SEC = 30.0
"""How long the command waits for its provenance write before spilling it to ``provenance-overflow/``."""


def _since(value: str) -> datetime:
    from resources.memory.hits import parse_since

    try:
        return parse_since(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recall", help="search every past prompt and answer (full-text, hybrid with embeddings)",
                       description=description(__doc__))
    p.add_argument("query", help="words or a phrase to look for")
    p.add_argument("-k", type=positive(), default=10, help="how many hits (default 10)")
    add_project_option(p, "only this project")
    p.add_argument("--since", type=_since,
                   help="only records at or after: 30m, 3h, 7d, 2w ago, or a date/time (UTC unless given)")
    p.add_argument("--agent", help="only this agent's sessions: claude, codex, gemini, opencode, qwen")
    add_session_option(p, "only this session (its id, or its first characters)")
    p.add_argument("--role", choices=("user", "assistant"), help="only prompts (user) or answers (assistant)")
    p.add_argument("--context", type=positive(), metavar="N", help="also the N messages before and after each hit")
    p.add_argument("--caller", default="cli",
                   help="who is recalling (a session id or a name), kept in each hit's provenance (default: cli)")
    hidden_alias(p, "--session-id", dest="caller")
    p.add_argument("--json", action="store_true", help="hits as a JSON list (documented shape, stdout only)")
    p.add_argument("--fields", choices=("all", "minimal"), default="all",
                   help="--json: every field, or rank, handle, agent, session, time, role, snippet")
    p.add_argument("--max-tokens", type=positive(), metavar="N",
                   help="shorten snippets and context until the output fits N tokens (hits are never dropped)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from resources.config.settings import Settings
    from resources.memory.lance import LanceStore
    from resources.memory.table_ledger import lost_tables_line

    settings = Settings.from_env()
    lost = lost_tables_line(settings)
    if lost:
        print(f"sessionlake recall: {lost}", file=sys.stderr)
        return 2
    if settings.storage_uri is None and not settings.lance_dir.exists():  # a bucket's tables are created on use
        print(f"sessionlake recall: no memory at {settings.lance_dir} yet; run `sessionlake ingest` first",
              file=sys.stderr)
        return exits.FAILED
    settings.check_storage()
    store = LanceStore.from_settings(settings)
    store.enable_provenance_queue(coalesce_ms=0)  # the hits' provenance is written while they are printed
    try:
        return _answer(args, settings, store)
    finally:
        store.disable_provenance_queue(timeout=PROVENANCE_WAIT_SEC)


def _answer(args: argparse.Namespace, settings, store) -> int:
    """Run the query on ``store`` and print the hits; the exit status."""
    import json
    import sys

    from pipelines.cli.projects import resolve_projects
    from resources.memory.fts_query import QuerySyntaxError, parse_query
    from resources.memory.hits import (
        ALL_FIELDS,
        MINIMAL_FIELDS,
        compact_json,
        context_around,
        describe,
        fit_budget,
        scope_filter,
    )
    from resources.memory.recall import recall
    from resources.memory.schema import LanceTableUnreadable

    try:
        where = scope_filter(agent=args.agent, session=args.session, role=args.role)
        words = parse_query(args.query).text
        projects = resolve_projects(args.project, store.projects(), "memory") if args.project else ()
        hits = recall(store, args.query, args.caller, k=args.k, project=projects, since=args.since, where=where)
    except (QuerySyntaxError, ValueError) as exc:
        print(f"sessionlake recall: {exc}", file=sys.stderr)
        return exits.BAD_USAGE
    except LanceTableUnreadable as exc:
        print(f"sessionlake recall: {exc}", file=sys.stderr)
        return exits.FAILED
    mark = ("**", "**") if args.json or not sys.stdout.isatty() else ("\x1b[1m", "\x1b[0m")
    fields = MINIMAL_FIELDS if args.json and args.fields == "minimal" else ALL_FIELDS
    rows = [describe(hit, i, words, SNIPPET_WIDTH, mark, fields) for i, hit in enumerate(hits, 1)]
    if args.context:
        from resources.archive.packs import PackStore

        for row, hit in zip(rows, hits, strict=True):
            around = context_around(store, hit["id"], args.context, args.context,
                                    packs=lambda: PackStore.from_settings(settings), width=CONTEXT_WIDTH)
            row["context"] = {side: around[side] for side in ("before", "after")} if around else None
    if args.max_tokens:
        rows = fit_budget(rows, args.max_tokens)
    if args.json:  # within a budget, printed as it was measured
        print(compact_json(rows) if args.max_tokens else json.dumps(rows, indent=2, ensure_ascii=False))
        return exits.DONE if hits else exits.FAILED
    if not hits:
        print(f"no records match {args.query!r}")
        return exits.FAILED
    for row, hit in zip(rows, hits, strict=True):
        when = hit["timestamp"].strftime("%Y-%m-%d %H:%M") if hit["timestamp"] else "-"
        session = (hit["session_id"] or "-")[:8]
        print(f"{row['rank']:>2}. {hit['score'] or 0:6.2f}  {row['agent'] or '-'}  {hit['project'] or '-'}  {session}  "
              f"{when}  {hit['role'] or '-'}")
        context = row.get("context") or {}
        for before in context.get("before", []):
            print(f"      {before['role'] or '-':<9}  {before['text']}")
        print(f"    {row['snippet']}")
        for after in context.get("after", []):
            print(f"      {after['role'] or '-':<9}  {after['text']}")
    return exits.DONE
