"""``sessionlake recall "query"``: ranked prompts and answers from every ingested session.

Each hit shows rank, score, project, session, time, role and a snippet with the cue words
highlighted (bold on a terminal, ``**word**`` otherwise and in ``--json``). Every hit gets a
provenance entry naming ``--caller`` (default ``cli``), written before the command exits. ``--project``
names are resolved as every command resolves them: an unknown one exits 1 with the closest names.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from pipelines.cli.options import add_project_option, hidden_alias

SNIPPET_WIDTH = 160


def _since(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD or ISO-8601)") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recall", help="search every past prompt and answer (full-text, hybrid with embeddings)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("query", help="words or a phrase to look for")
    p.add_argument("-k", type=_positive, default=10, help="how many hits (default 10)")
    add_project_option(p, "only this project")
    p.add_argument("--since", type=_since, help="only records at or after this date/time (UTC unless given)")
    p.add_argument("--caller", default="cli",
                   help="who is recalling (a session id or a name), kept in each hit's provenance (default: cli)")
    hidden_alias(p, "--session-id", dest="caller")
    p.add_argument("--json", action="store_true", help="hits as a JSON list")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from pipelines.cli.projects import resolve_projects
    from resources.config.settings import Settings
    from resources.memory.lance import LanceStore, LanceTableUnreadable
    from resources.memory.recall import recall, snippet

    settings = Settings.from_env()
    if settings.storage_uri is None and not settings.lance_dir.exists():  # a bucket's tables are created on use
        print(f"sessionlake recall: no memory at {settings.lance_dir} yet; run `sessionlake ingest` first",
              file=sys.stderr)
        return 1
    settings.check_storage()
    store = LanceStore.from_settings(settings)
    try:
        projects = resolve_projects(args.project, store.projects(), "memory") if args.project else ()
        hits = recall(store, args.query, args.caller, k=args.k, project=projects, since=args.since)
    except LanceTableUnreadable as exc:
        print(f"sessionlake recall: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out = [{**_plain(hit), "rank": i, "snippet": snippet(hit["text"], args.query, SNIPPET_WIDTH, ("**", "**"))}
               for i, hit in enumerate(hits, 1)]
        print(json.dumps(out, indent=2, default=str))
        return 0
    if not hits:
        print(f"no records match {args.query!r}")
        return 0
    mark = ("\x1b[1m", "\x1b[0m") if sys.stdout.isatty() else ("**", "**")
    for i, hit in enumerate(hits, 1):
        when = hit["timestamp"].strftime("%Y-%m-%d %H:%M") if hit["timestamp"] else "-"
        session = (hit["session_id"] or "-")[:8]
        print(f"{i:>2}. {hit['score'] or 0:6.2f}  {hit['project'] or '-'}  {session}  {when}  {hit['role'] or '-'}")
        print(f"    {snippet(hit['text'], args.query, SNIPPET_WIDTH, mark)}")
    return 0


def _plain(hit: dict) -> dict:
    keep = ("id", "score", "project", "session_id", "session_key", "timestamp", "role", "model", "tier", "tags",
            "text")
    row = {k: hit.get(k) for k in keep}
    if row["timestamp"] is not None:
        row["timestamp"] = row["timestamp"].isoformat()
    return row
