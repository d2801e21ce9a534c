"""``sessionlake dev``: the Dagster UI and daemon for this code location, on the instance at DAGSTER_HOME."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev", help="start the Dagster UI (and daemon: sensors, schedules) for sessionlake")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default="3000")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from pipelines.instance import prepare_dagster_home
    from resources.settings import Settings

    home = prepare_dagster_home(Settings.from_env())
    print(f"DAGSTER_HOME={home}", file=sys.stderr)
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "pipelines.definitions", "-h", args.host, "-p", args.port]
    os.execv(sys.executable, cmd)
