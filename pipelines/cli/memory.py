"""``sessionlake memory rebuild``: re-derive the Lance ``records`` and ``edges`` tables from the archive.

The repair for a table Lance cannot open (``sessionlake maintain`` and the ``lance_tables_readable``
check name it): the broken folder is moved to ``lance/broken/`` (in a bucket: copied there, then
deleted), and every archived version of every session file goes through the memory processor again.
Exit 0 when every version was used, 1 when one failed (the others are still written), 2 when the
rebuild cannot start (the storage bucket cannot be reached); then nothing is set aside or written.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.cli.options import description


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("memory", help="repair the searchable memory (Lance tables)",
                       description=description(__doc__))
    actions = p.add_subparsers(dest="memory_command", required=True, metavar="ACTION")
    rebuild = actions.add_parser("rebuild", help="set aside unreadable Lance tables and re-derive records and "
                                                 "edges from the archive", description=description(__doc__, 1))
    rebuild.add_argument("--json", action="store_true", help="print the report as JSON")
    rebuild.set_defaults(handler=run_rebuild)


def run_rebuild(args: argparse.Namespace) -> int:
    from resources.archive.packs import PackStore
    from resources.config.settings import Settings
    from resources.memory.lance import LanceStore
    from resources.memory.rebuild import rebuild_memory

    settings = Settings.from_env()
    settings.check_storage()
    report = rebuild_memory(LanceStore.from_settings(settings), PackStore.from_settings(settings))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for table, path in report["set_aside"].items():
            print(f"set aside unreadable table {table}: {path}")
        for table in report["recreated"]:
            print(f"recreated lost table {table}")
        print(f"rebuilt from {report['versions']:,} archived version(s) in {report['projects']} project(s): "
              f"{report['records_written']:,} records, {report['edges_written']:,} edges")
    for error in report["errors"]:
        where = error["session_key"] or error["project"] or "archive"
        print(f"sessionlake memory rebuild: {where}: {error['error']}", file=sys.stderr)
    return 1 if report["errors"] else 0
