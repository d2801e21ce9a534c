"""What the sync tests share: a machine (a HOME with a Claude Code tree), the CLI run as that machine
against a location (a folder or the moto S3 server, `sync_uri`), and the warehouse totals to compare."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.corpus import generate_corpus
from resources.ingest.processors.usage import UsageProcessor
from resources.ingest.runner import run_processors
from resources.state.store import StateStore
from resources.sync.location import open_location
from tests.conftest import SAMPLES, writable_copy

REPO = Path(__file__).resolve().parents[1]
TOTALS = """SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cache_creation_tokens),
                   sum(cache_read_tokens), round(sum(coalesce(cost_usd, computed_cost_usd, 0)), 6)
            FROM usage_messages"""


def _machine(tmp_path: Path, name: str, seed: int, sessions: int = 5, samples: bool = False) -> Path:
    """A HOME with a Claude Code tree: generated sessions (``seed``), and the sample sessions if asked."""
    home = tmp_path / name
    projects = home / ".claude" / "projects"
    generate_corpus(projects, sessions=sessions, projects=2, seed=seed, turns=4)
    if samples:
        writable_copy(SAMPLES, home / "samples")
        shutil.copytree(home / "samples", projects, dirs_exist_ok=True)
        shutil.rmtree(home / "samples")
    return home


def _env(home: Path, uri: str, **extra: str) -> dict:
    env = {**os.environ, "HOME": str(home), "SESSIONLAKE_HOME": str(home / ".sessionlake"),
           "SESSIONLAKE_SYNC_URI": uri, "SESSIONLAKE_MACHINE": home.name, "SESSIONLAKE_USER": "chip"}
    for name in ("SESSIONLAKE_SESSIONS_DIR", "SESSIONLAKE_STORAGE_URI", "SESSIONLAKE_TEAM_URI", "DAGSTER_HOME"):
        env.pop(name, None)
    return {**env, **extra}


def _cli(home: Path, uri: str, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=_env(home, uri, **extra),
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def _sync(home: Path, uri: str, **extra: str) -> dict:
    done = _cli(home, uri, "sync", "--json", **extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _totals(home: Path, state: str = ".sessionlake/state.duckdb") -> tuple:
    with StateStore(home / state).connect() as conn:
        return conn.execute(TOTALS).fetchall()[0]


def _union_totals(tmp_path: Path, homes: list[Path]) -> tuple:
    """One ingest of every machine's session files together (a file two machines hold, once)."""
    tree = tmp_path / "union"
    for home in homes:
        shutil.copytree(home / ".claude" / "projects", tree, dirs_exist_ok=True)
    state = StateStore(tmp_path / "union.duckdb")
    run_processors([UsageProcessor()], tree, state)
    with state.connect() as conn:
        return conn.execute(TOTALS).fetchall()[0]


def _location_files(uri: str) -> dict[str, bytes]:
    blobs = open_location(uri)
    return {b.name: blobs.get_bytes(b.name) for b in blobs.list("")}
