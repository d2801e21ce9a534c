"""``sessionlake dev``: the Dagster UI and daemon for this code location, on the instance at DAGSTER_HOME.

It loads the location through the repo's ``workspace.yaml`` when it is there (the same file
``dagster dev -w workspace.yaml`` reads), else through one written into DAGSTER_HOME with the same
location name: cursors, tick history and sensor state are stored per location name, so both ways of
starting it must agree on ``sessionlake``. Exits 2, saying why, when a setting is invalid or the
Dagster instance cannot be opened (a Postgres instance is opened once before Dagster starts).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.cli.options import description

LOCATION_NAME = "sessionlake"
REPO_WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dev", help="start the Dagster UI (and daemon: sensors, schedules) for sessionlake",
                       description=description(__doc__))
    p.add_argument("--host", default="127.0.0.1", help="address the UI listens on (default 127.0.0.1)")
    p.add_argument("--port", default="3000", help="port the UI listens on (default 3000)")
    p.set_defaults(handler=run)


def workspace_file(home: Path) -> Path:
    """The workspace file that names the location `LOCATION_NAME`."""
    if REPO_WORKSPACE.exists():
        return REPO_WORKSPACE
    path = home / "workspace.yaml"
    path.write_text(f"load_from:\n  - python_module:\n      module_name: pipelines.definitions\n"
                    f"      location_name: {LOCATION_NAME}\n")
    return path


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from pipelines.instance.home import InstanceConfigError, open_instance, postgres_configs, prepare_dagster_home
    from resources.config.settings import Settings

    try:
        settings = Settings.from_env()
        settings.check_storage()
        home = prepare_dagster_home(settings)
        if postgres_configs(home / "dagster.yaml"):
            # reach the server now, with one clear error, and create the schema once, before the
            # webserver, the daemon and its threads all race to
            open_instance().dispose()
    except (ValueError, InstanceConfigError) as exc:
        print(f"sessionlake dev: {exc}", file=sys.stderr)
        return 2
    print(f"DAGSTER_HOME={home}", file=sys.stderr)
    workspace = workspace_file(home)
    os.chdir(workspace.parent)
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", args.host, "-p", args.port]
    os.execv(sys.executable, cmd)
