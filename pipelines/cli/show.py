"""``sessionlake show SESSION [--around HIT] [-C N]``: the messages of one session, in the order they were written.

SESSION is a session id (or its first characters, as ``recall`` prints them) or a session key. With
``--around HIT`` (a recall hit's handle or record id) only the ``-C N`` messages on each side of the hit
are shown, the hit marked with ``>``. Messages come from the memory, or from the newest archived
version of the session file when the memory no longer holds the session. ``--json`` prints
``{session, session_key, project, source, around, messages: [{id, role, time, text}]}`` on stdout.
Exit status: 0 shown, 1 no such session or hit, 2 bad usage.
"""

from __future__ import annotations

import argparse

from pipelines.cli import exits
from pipelines.cli.options import description

TEXT_WIDTH = 400
"""Characters of a message in the text view (``--json`` keeps the whole text)."""


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a count (0 or more)")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="the messages of one session, or those around a recall hit",
                       description=description(__doc__))
    p.add_argument("session", metavar="SESSION", help="session id (or its start, as recall prints it) or key")
    p.add_argument("--around", metavar="HIT", help="only the messages around this hit (handle or record id)")
    p.add_argument("-C", "--context", type=_count, default=3, metavar="N",
                   help="with --around: messages on each side of the hit (default 3)")
    p.add_argument("--json", action="store_true", help="the messages as JSON on stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from resources.archive.packs import PackStore
    from resources.config.settings import Settings
    from resources.memory.hits import load_session, message, read_handle
    from resources.memory.lance import LanceStore
    from resources.memory.schema import LanceTableUnreadable

    settings = Settings.from_env()
    settings.check_storage()
    try:
        around = read_handle(args.around)[0] if args.around else None
        found = load_session(LanceStore.from_settings(settings), args.session,
                             packs=lambda: PackStore.from_settings(settings))
    except (ValueError, LanceTableUnreadable) as exc:
        print(f"sessionlake show: {exc}", file=sys.stderr)
        return exits.FAILED if isinstance(exc, LanceTableUnreadable) else exits.BAD_USAGE
    if found is None:
        print(f"sessionlake show: no session {args.session!r} in the memory or the archive", file=sys.stderr)
        return exits.FAILED
    rows = found["messages"]
    if around is not None:
        at = next((i for i, r in enumerate(rows) if r["id"] == around), None)
        if at is None:
            print(f"sessionlake show: hit {args.around!r} is not in session {args.session!r}", file=sys.stderr)
            return exits.FAILED
        rows = rows[max(at - args.context, 0): at + args.context + 1]
    session_id = next((r["session_id"] for r in rows if r.get("session_id")), None)
    if args.json:
        print(json.dumps({"session": session_id, "session_key": found["session_key"], "project": found["project"],
                          "source": found["source"], "around": around, "messages": [message(r) for r in rows]},
                         indent=2, ensure_ascii=False))
        return exits.DONE
    print(f"{session_id or found['session_key']}  {found['project']}  ({found['source']}, {len(rows)} messages)")
    for row in rows:
        shown = message(row, TEXT_WIDTH)
        mark = ">" if row["id"] == around else " "
        print(f"{mark} {(shown['time'] or '-')[:19].replace('T', ' ')}  {shown['role'] or '-':<9}  {shown['text']}")
    return exits.DONE
