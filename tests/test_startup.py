"""A command imports what its work needs, decided before the heavy imports: Dagster only for a run,
pylance (never LanceDB, never a namespace REST client) for recall and for an ingest that writes the
memory, neither pyarrow nor Lance for a report. Each command runs as a fresh process, as a user runs
it, and its imports are read from ``-X importtime``; a library upgrade that brings an eager import
back fails here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines.cli.ingest_run import HELD_BACK_LOG
from resources.memory.table_ledger import ledger_for
from tests.conftest import SAMPLE_PROJECT

pytestmark = pytest.mark.integration


def _run(settings, tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    env = {**os.environ, "SESSIONLAKE_HOME": str(settings.home), "SESSIONLAKE_SESSIONS_DIR": str(settings.sessions_dir),
           "DAGSTER_HOME": str(tmp_path / "dagster")}
    held_back = settings.home / HELD_BACK_LOG  # an ingest run's own stderr (its imports' lines too) goes there
    held_back.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipelines.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    lines = done.stderr.splitlines()
    if held_back.exists():
        lines += held_back.read_text(errors="replace").splitlines()
    modules = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    return done, modules | {m.split(".")[0] for m in modules}  # each module, and each top-level package


def test_each_command_imports_only_what_its_work_needs(settings, tmp_path):
    lancedb = {"lancedb", "lance_namespace", "lance_namespace_urllib3_client"}
    ingest, imported = _run(settings, tmp_path, "ingest")
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    assert "dagster" in imported  # a run was made, on the instance
    assert "lance" in imported and not imported & lancedb, sorted(imported & lancedb)  # memory written with pylance

    again, imported = _run(settings, tmp_path, "ingest")
    assert again.returncode == 0 and "nothing to ingest" in again.stdout, again.stderr[-3000:]
    assert not imported & {"dagster", "lancedb", "lance", "pyarrow"}

    report, imported = _run(settings, tmp_path, "usage", "daily", "--json")
    assert report.returncode == 0 and '"totals"' in report.stdout, report.stderr[-3000:]
    assert "duckdb" in imported and not imported & {"dagster", "lancedb", "lance", "pyarrow", "numpy"}

    heavy = {"dagster", "lancedb", "lance_namespace", "lance_namespace_urllib3_client", "urllib3"}
    first, imported = _run(settings, tmp_path, "recall", "music", "--project", SAMPLE_PROJECT, "--json")
    assert first.returncode == 0 and '"id"' in first.stdout, first.stderr[-3000:]
    assert "lance" in imported and not imported & heavy, sorted(imported & heavy)
    assert "provenance" in ledger_for(settings).known()  # the table it created is recorded in the warehouse

    recall, imported = _run(settings, tmp_path, "recall", "music", "--project", SAMPLE_PROJECT, "--json")
    assert recall.returncode == 0 and recall.stdout == first.stdout, recall.stderr[-3000:]
    assert "lance" in imported
    heavy |= {"duckdb", "resources.state.store"}  # every table is there: nothing can be lost, no warehouse read
    heavy |= {"resources.sources.claude", "resources.usage.pricing"}  # a hit's agent needs no adapter
    assert not imported & heavy, sorted(imported & heavy)
