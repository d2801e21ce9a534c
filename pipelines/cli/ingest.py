"""``sessionlake ingest``: run the ingest_sessions job once, on the Dagster instance at DAGSTER_HOME.

Exit status: 0 when every file was ingested (or nothing needed it), 1 when any file failed (the
files and errors are listed; they stay unprocessed and are retried), 2 when a setting is invalid,
the storage bucket (SESSIONLAKE_STORAGE_URI) cannot be reached or used (checked unless ``--only usage``,
which does not touch it), a Lance table that existed is gone (unless ``--only`` leaves memory out;
`sessionlake memory rebuild` repairs it), there is no sessions tree to read, the Dagster instance cannot be opened
(say, its Postgres server), or a pool slot stayed taken by another live run.

The terminal gets a few lines whatever the run's size: the first line of each of the run's warnings (at
most 5), the files that failed, and one line for a failed run. The run's full log is on the Dagster instance
(the UI shows it under the run's id); what else the run printed is kept in $SESSIONLAKE_HOME/logs/ingest.log.
``--debug`` prints Dagster's log of the run as it goes, with tracebacks.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.cli.options import add_project_option, description
from pipelines.defs.tags import PROCESSOR_ASSETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="ingest new and changed session files (a run you can see in the Dagster UI)",
                       description=description(__doc__))
    add_project_option(p, "only this project (default: all)")
    p.add_argument("--only", action="append", choices=sorted(PROCESSOR_ASSETS),
                   help="only these processors (repeatable); default: all")
    p.add_argument("--all", action="store_true", dest="everything",
                   help="run every project, not only those with new, changed or failed files, and hash every file "
                        "(a rewrite that kept its size and mtime is read again)")
    p.add_argument("--json", action="store_true", help="print the per-asset stats as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipelines.cli.ingest_run import SessionsNotFound, ingest
    from pipelines.instance.home import InstanceConfigError, PoolWaitTimeout
    from resources.config.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as exc:  # a bad SESSIONLAKE_* value
        print(f"sessionlake ingest: {exc}", file=sys.stderr)
        return 2
    if set(args.only or PROCESSOR_ASSETS) - {"usage"}:  # memory and archive write to the storage; usage does not
        settings.check_storage()
    if "memory" in (args.only or PROCESSOR_ASSETS):
        from resources.memory.table_ledger import lost_tables_line

        lost = lost_tables_line(settings)
        if lost:
            print(f"sessionlake ingest: {lost}", file=sys.stderr)
            return 2
    try:
        assets = [PROCESSOR_ASSETS[name] for name in args.only or []] or None
        result = ingest(projects=args.project or None, assets=assets, settings=settings, everything=args.everything,
                        say=lambda text: print(text, file=sys.stderr), debug=getattr(args, "debug", False))
    except (SessionsNotFound, InstanceConfigError, PoolWaitTimeout) as exc:
        print(f"sessionlake ingest: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif result["run_id"] is None:
        print(f"agents found: {', '.join(result['agents'])}")
        print(f"nothing to ingest: {result['up_to_date']} project(s) up to date (--all runs them anyway)")
    else:
        status = "success" if result["success"] else ("FAILED" if not result["errors"]
                                                      else f"{result['errors']} file error(s)")
        print(f"agents found: {', '.join(result['agents'])}")
        print(f"run {result['run_id']} ({status}), {len(result['projects'])} project(s), "
              f"{result['elapsed_sec']:.2f}s")
        if result["error"]:
            print(f"sessionlake ingest: run {result['run_id']} failed: {result['error']} (its full log: the Dagster "
                  "UI, `sessionlake dev`; or run the command again with --debug)", file=sys.stderr)
        for asset, stats in result["assets"].items():
            print(f"  {asset}: " + ", ".join(f"{k} {v:,}" for k, v in stats.items()))
    for asset, table in result["failures"].items():
        print(f"\n{asset}: files that failed (left unprocessed, retried by the next ingest or the sensor):\n{table}",
              file=sys.stderr)
    if result["failures"]:
        print(f"\nretry markers: {settings.retry_dir}; malformed lines: table malformed_lines "
              "in state.duckdb", file=sys.stderr)
    return 0 if result["success"] else 1
