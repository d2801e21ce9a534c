"""Screenshots of the Dagster UI as a user sees it, taken from a real `sessionlake dev`: ``make screenshots``.

Builds a sample sessions tree (the fixture sessions plus a few generated projects), starts
``sessionlake dev`` on a free loopback port with a temp SESSIONLAKE_HOME and DAGSTER_HOME
(`tests.live_dagster`), lets the session sensor ingest it, then appends to two projects twice, so
their partitions have three materializations each and the metadata plots have points. Headless
Chromium (``shoot.cjs``, playwright-core) then takes the pictures into this folder. Every process
is stopped by pid on the way out, whatever happened.

    .venv/bin/python -m tests.screenshots.take [--keep] [--node-path .node/node_modules]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.corpus import generate_corpus
from tests.live_dagster import LiveDagster

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIXTURES = REPO / "pipelines" / "cli" / "samples" / "claude-code-1.0.17"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
GENERATED_PROJECTS = 4
GROWING = ("-home-dev-project-000", "-home-dev-project-001")
"""Projects that get appended to (and get a new session) between ingests."""
ROUNDS = 3
SHOOT_TIMEOUT_SEC = 600
SENSOR_INTERVAL_SEC = 10
"""Short enough for quick rounds, long enough that the tick which asked for the last run is still in
view on the sensor page when the pictures are taken."""


def build_tree(root: Path) -> None:
    """The fixture project plus `GENERATED_PROJECTS` generated ones (3 sessions each, from 3 days ago, so
    usage_totals' table of the week has rows)."""
    shutil.copytree(FIXTURES, root, dirs_exist_ok=True)
    generate_corpus(root, sessions=3 * GENERATED_PROJECTS, projects=GENERATED_PROJECTS, seed=7, turns=6,
                    start=datetime.now(UTC) - timedelta(days=3))


def grow(root: Path, round_no: int, scratch: Path) -> None:
    """Append a generated session's lines to one file of each `GROWING` project, and add a new session."""
    batch = scratch / f"round-{round_no}"
    generate_corpus(batch, sessions=2 * GENERATED_PROJECTS, projects=GENERATED_PROJECTS, seed=100 + round_no,
                    turns=3 + 2 * round_no, start=datetime.now(UTC) - timedelta(hours=12))
    for project in GROWING:
        extra = sorted((batch / project).glob("*.jsonl"))
        target = sorted((root / project).glob("*.jsonl"))[0]
        with target.open("ab") as f:
            f.write(extra[0].read_bytes())
        shutil.copy(extra[1], root / project / extra[1].name)


def ingest_rounds(live: LiveDagster, root: Path, scratch: Path) -> dict:
    """Wait for the sensor's first run, then grow the tree and wait for the run that follows, twice."""
    seen: set[str] = set()
    for round_no in range(ROUNDS):
        if round_no:
            grow(root, round_no, scratch)
        run = live.wait_for_run(lambda r, seen=seen: r["jobName"] == "ingest_sessions" and r["runId"] not in seen,
                                timeout_sec=300, what=f"ingest run {round_no + 1} of {ROUNDS}")
        seen.add(run["runId"])
        print(f"ingest run {round_no + 1}: {run['runId']} {run['status']}", file=sys.stderr)
    return run


def shoot(live: LiveDagster, run: dict, out: Path, node_path: Path, profile: Path) -> None:
    live.gql("mutation { setNuxSeen }")  # no "Join the Dagster community" dialog over the pictures
    spec = {"url": live.url, "out": str(out), "chromium": CHROMIUM, "profile": str(profile), "runId": run["runId"]}
    env = {**os.environ, "NODE_PATH": str(node_path)}
    # Its own process group, so Chromium goes with node however the shots end.
    proc = subprocess.Popen(["node", str(HERE / "shoot.cjs"), json.dumps(spec)], env=env, start_new_session=True)
    try:
        code = proc.wait(timeout=SHOOT_TIMEOUT_SEC)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if code:
        raise SystemExit(f"shoot.cjs failed (exit {code}); run with --keep to look at the dagster log")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-path", type=Path, default=REPO / ".node" / "node_modules",
                        help="folder holding playwright-core (default: .node/node_modules)")
    parser.add_argument("--out", type=Path, default=HERE, help="where the PNGs go (default: this folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (data home, dagster log)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sessionlake-screenshots-"))
    started = time.monotonic()
    try:
        root = tmp / "projects"
        build_tree(root)
        with LiveDagster(home=tmp / "home", sessions_dir=root, sensor_interval_sec=SENSOR_INTERVAL_SEC) as live:
            run = ingest_rounds(live, root, tmp / "scratch")
            shoot(live, run, args.out, args.node_path, tmp / "chromium-profile")
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"screenshots in {args.out} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
