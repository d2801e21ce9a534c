"""A Lance table that cannot be opened is never recreated empty; `sessionlake memory rebuild` re-derives it."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from resources.memory.lance import EDGES, RECORDS, LanceStore

pytestmark = pytest.mark.integration

RECORD_FIELDS = ("id", "tier", "text", "role", "session_id", "session_key", "project", "timestamp", "model",
                 "git_branch", "tags")


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "pipelines.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _memory(settings):
    store = LanceStore.from_settings(settings)
    records = {tuple(str(r[f]) for f in RECORD_FIELDS) for r in store.open_table(RECORDS).to_arrow().to_pylist()}
    edges = {(e["src"], e["dst"], e["edge_type"]) for e in store.open_table(EDGES).to_arrow().to_pylist()}
    return records, edges


def test_a_table_without_versions_fails_loudly_and_rebuilds_from_the_archive(settings, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    assert _cli("ingest", env=env).returncode == 0
    records, edges = _memory(settings)
    assert len(records) > 30 and len(edges) > 30

    table = settings.lance_dir / f"{RECORDS}.lance"
    shutil.rmtree(table / "_versions")
    maintain = _cli("maintain", env=env)
    assert maintain.returncode == 1
    assert "records" in maintain.stdout and "exists but cannot be opened" in maintain.stdout
    assert "sessionlake memory rebuild" in maintain.stdout
    assert not (table / "_versions").exists(), "the broken table was recreated over its files"
    recall = _cli("recall", "push to github", env=env)
    assert recall.returncode == 1 and recall.stderr.startswith("sessionlake recall: Lance table 'records'")
    ingest = _cli("ingest", "--all", "--only", "memory", "--json", env=env)
    assert ingest.returncode == 1 and not json.loads(ingest.stdout)["success"]
    assert not (table / "_versions").exists()

    shutil.rmtree(settings.sessions_dir)  # the agent deleted its transcripts: only the archive has them
    rebuilt = _cli("memory", "rebuild", "--json", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    report = json.loads(rebuilt.stdout)
    assert list(report["set_aside"]) == [RECORDS] and report["errors"] == []
    assert (settings.lance_dir / "broken").is_dir() and os.path.isdir(report["set_aside"][RECORDS])
    assert (report["records_written"], report["versions"]) == (len(records), 4)
    assert _memory(settings) == (records, edges)
    again = _cli("memory", "rebuild", "--json", env=env)  # nothing broken: merged into, nothing changes
    assert json.loads(again.stdout)["set_aside"] == {} and _memory(settings) == (records, edges)
