"""``sessionlake ingest``: run the ingest_sessions job once, on the Dagster instance at DAGSTER_HOME."""

from __future__ import annotations

import argparse
import json

from pipelines.ingest_run import PROCESSOR_ASSETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="ingest new and changed session files (a run you can see in the Dagster UI)")
    p.add_argument("--project", action="append", help="only this project (repeatable); default: all")
    p.add_argument("--only", action="append", choices=sorted(PROCESSOR_ASSETS),
                   help="only these processors (repeatable); default: all")
    p.add_argument("--all", action="store_true", dest="everything",
                   help="run every project, not only those with new, changed or failed files")
    p.add_argument("--json", action="store_true", help="print the per-asset stats as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pipelines.ingest_run import ingest

    result = ingest(projects=args.project, assets=[PROCESSOR_ASSETS[name] for name in args.only or []] or None,
                    everything=args.everything)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif result["run_id"] is None:
        print(f"nothing to ingest: {result['up_to_date']} project(s) up to date (--all runs them anyway)")
    else:
        print(f"run {result['run_id']} ({'success' if result['success'] else 'FAILED'}), "
              f"{len(result['projects'])} project(s), {result['elapsed_sec']:.2f}s")
        for asset, stats in result["assets"].items():
            shown = ", ".join(f"{k} {v}" for k, v in stats.items())
            print(f"  {asset}: {shown}")
    return 0 if result["success"] else 1
