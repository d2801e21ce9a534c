"""``sessionlake maintain``: compact the Lance tables and prune old versions now (phase ``manual``).

Prints the before/after table (``--json``: the report as JSON). A retention below the floor
(``SESSIONLAKE_LANCE_RETENTION_FLOOR_SEC``, default 1 hour) is refused unless ``--force``: pruning
recent versions breaks handles other processes hold open. Exit 0 when every table was optimized, 1 when
one failed (the others are still done), 2 when the retention was refused or a Lance table that existed
is gone (nothing is done; `sessionlake memory rebuild` repairs it).
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.cli.options import description


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("maintain", help="compact the Lance tables and remove old versions; print before/after",
                       description=description(__doc__))
    p.add_argument("--retention", type=float, metavar="SECONDS",
                   help="keep versions younger than this (default: SESSIONLAKE_LANCE_OPTIMIZE_RETENTION_SEC, 86400)")
    p.add_argument("--force", action="store_true",
                   help="allow a retention below the floor; only when no other process uses the tables")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from resources.config.settings import Settings
    from resources.memory import maintenance as lm
    from resources.memory.lance import LanceStore
    from resources.memory.table_ledger import lost_tables_line

    settings = Settings.from_env()
    settings.check_storage()
    lost = lost_tables_line(settings)
    if lost:
        print(f"sessionlake maintain: {lost}", file=sys.stderr)
        return 2
    retention = settings.lance_optimize_retention_sec if args.retention is None else args.retention
    try:
        lm.check_retention(retention, settings.lance_retention_floor_sec, args.force)
    except lm.RetentionBelowFloor as exc:
        print(f"sessionlake maintain: {exc}", file=sys.stderr)
        return 2
    report = lm.optimize_lance_storage(LanceStore.from_settings(settings), timedelta(seconds=retention), "manual")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(lm.format_report_table(report))
    return 1 if any("error" in entry for entry in report.values()) else 0
