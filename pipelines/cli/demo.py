"""``sessionlake demo``: ingest sample sessions into a fresh temp home and show what sessionlake gives you."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipelines.cli.options import description

SAMPLES = Path(__file__).resolve().parent / "samples" / "claude-code-1.0.17"
"""Four real Claude Code sessions, shipped as package data (samples/README.md says where they come from)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="ingest the sample sessions into a temp home and print reports",
                       description=description(__doc__))
    p.add_argument("--home", help="data home to use (default: a new temp dir)")
    p.add_argument("--source", default=str(SAMPLES), help="a projects tree to copy in (default: the samples)")
    p.set_defaults(handler=run, manages_home=True)  # its steps use a home of their own


def run(args: argparse.Namespace) -> int:
    import os
    import shutil
    import tempfile

    from pipelines.cli import main as cli

    source = Path(args.source)
    if not source.is_dir():
        print(f"sessionlake demo: no sessions at {source}")
        return 2
    home = Path(args.home or tempfile.mkdtemp(prefix="sessionlake-demo-")).resolve()
    sessions = home / "sessions"
    shutil.copytree(source, sessions, dirs_exist_ok=True)
    # only the samples: not the Codex, Gemini, ... sessions this machine's user may have
    os.environ.update({"SESSIONLAKE_HOME": str(home), "SESSIONLAKE_SESSIONS_DIR": str(sessions),
                       "DAGSTER_HOME": str(home / "dagster"), "SESSIONLAKE_AGENTS": "claude"})
    print(f"demo home: {home}\nsessions:  {sessions}\n")
    steps = [["ingest"], ["usage", "daily"], ["usage", "session"], ["recall", "music generation", "-k", "3"],
             ["archive", "ls"], ["ingest"]]
    for step in steps:
        print(f"$ sessionlake {' '.join(step)}")
        code = cli.main(step)
        print()
        if code:
            return code
    print("The second ingest found nothing new: every file is already processed.")
    print(f"Explore it: SESSIONLAKE_HOME={home} SESSIONLAKE_SESSIONS_DIR={sessions} DAGSTER_HOME={home}/dagster "
          "sessionlake dev")
    return 0
