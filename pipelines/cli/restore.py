"""``sessionlake restore --project PROJECT [--session KEY] [--at TIME] --to DIR``: rebuild archived session files.

Files land at ``DIR/<session key>`` (so DIR can serve as a sessions root), byte for byte and
hash-checked, with their original mtime. An existing file with other content is left alone and
reported, and so is a file whose folder under DIR is a symlink (nothing is written outside DIR); the
exit status is then 1, as it is for a project or session the archive does not hold.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from pipelines.cli import exits
from pipelines.cli.options import add_project_option, description, project_names


def _time(value: str) -> datetime:
    from resources.times import as_utc

    try:
        return as_utc(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO-8601 time (e.g. 2025-06-09T12:00:00Z)") from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore archived session files byte for byte",
                       description=description(__doc__))
    add_project_option(p, "the project to restore", positionals=True)
    p.add_argument("--session", metavar="KEY",
                   help="one session: its key (--session=PROJECT/ID.jsonl), its path inside the project, or its id")
    p.add_argument("--at", type=_time, metavar="TIME",
                   help="the version as it was at TIME (ISO-8601, UTC unless an offset is given); default latest")
    p.add_argument("--to", required=True, type=Path, metavar="DIR", help="where to write the files")
    p.add_argument("--json", action="store_true", help="print one JSON object per file")
    p.set_defaults(handler=run, parser=p)


def resolve_session(project: str, wanted: str, keys: list[str]) -> str:
    """The one archived session key ``wanted`` names (full key, path inside the project, or file stem)."""
    for candidate in (wanted, f"{project}/{wanted}"):
        if candidate in keys:
            return candidate
    matches = [k for k in keys if Path(k).stem == wanted]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise AmbiguousSession(f"session {wanted!r} is ambiguous: {', '.join(matches)}")
    raise LookupError(f"no archived session {wanted!r} in project {project}")


class AmbiguousSession(ValueError):
    """``--session`` names more than one archived session file: bad usage, not nothing found."""


def run(args: argparse.Namespace) -> int:
    from pipelines.cli.archive import resolve_projects
    from resources.archive.pack_format import PackError
    from resources.archive.packs import PackStore
    from resources.config.settings import Settings

    names = project_names(args)
    if not names:
        args.parser.error("a project is required: --project PROJECT")
    if args.session and len(names) > 1:
        args.parser.error("--session goes with one --project")
    settings = Settings.from_env()
    settings.check_storage()
    store = PackStore.from_settings(settings)
    results = []
    try:
        for project in resolve_projects(store, names):
            session_key = None
            if args.session:
                keys = sorted({v.snapshot.session_key for v in store.versions(project)})
                session_key = resolve_session(project, args.session, keys)
            results += store.restore(project, args.to, session_key=session_key, at=args.at)
    except AmbiguousSession as exc:
        args.parser.error(str(exc))
    except (PackError, LookupError) as exc:  # a damaged pack, or nothing archived under that session
        print(f"sessionlake restore: {exc}", file=sys.stderr)
        return exits.FAILED
    for r in results:
        if args.json:
            print(json.dumps(r))
        else:
            reason = f": {r['reason']}" if "reason" in r else ""
            print(f"{r['status']:<10} {r['path']}  ({r['size']:,} bytes){reason}")
    conflicts = [r for r in results if r["status"] == "conflict"]
    refused = [r for r in results if r["status"] == "refused"]
    if conflicts:
        print(f"sessionlake restore: {len(conflicts)} file(s) exist with other content and were left alone",
              file=sys.stderr)
    if refused:
        print(f"sessionlake restore: {len(refused)} file(s) refused: a symlink under {args.to} would lead "
              "outside it", file=sys.stderr)
    return exits.FAILED if conflicts or refused else exits.DONE
