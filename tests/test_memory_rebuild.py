"""A Lance table that cannot be opened is never recreated empty; `sessionlake memory rebuild` re-derives it."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from resources.memory.lance import LanceStore
from resources.memory.schema import EDGES, PROVENANCE, RECORDS

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


def test_a_table_folder_that_is_gone_is_an_error_everywhere_until_rebuilt(settings, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    assert _cli("ingest", env=env).returncode == 0
    records, edges = _memory(settings)
    table = settings.lance_dir / f"{RECORDS}.lance"
    shutil.rmtree(table)
    for args in (("recall", "push to github"), ("ingest",), ("maintain",)):
        out = _cli(*args, env=env)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        [line] = out.stderr.splitlines()
        assert line.startswith(f"sessionlake {args[0]}: Lance table 'records' at {table} is gone"), line
        assert line.endswith("run `sessionlake memory rebuild` to re-derive records and edges from the archive "
                             "(it holds all 4 session files the memory was built from)"), line
        assert not table.exists(), f"{args[0]} recreated the lost table empty"
    assert _cli("ingest", "--only", "usage", env=env).returncode == 0  # the warehouse does not need memory

    rebuilt = _cli("memory", "rebuild", "--json", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout)["recreated"] == [RECORDS]
    assert _memory(settings)[0] == records
    assert _cli("recall", "push to github", env=env).returncode == 0


def test_a_table_prefix_wiped_from_the_bucket_is_lost_not_empty(s3_location, tmp_path, monkeypatch):
    from resources.config.settings import Settings
    from resources.memory.schema import LanceTableLost, new_record

    monkeypatch.setenv("SESSIONLAKE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SESSIONLAKE_STORAGE_URI", s3_location.uri)
    store = LanceStore.from_settings(Settings.from_env())
    store.upsert_records([new_record("r1", "a prompt worth keeping", tier="episodic")])
    blobs = s3_location.blobs()
    for blob in list(blobs.list(f"lance/{RECORDS}.lance/")):
        blobs.delete(blob.name)
    try:
        LanceStore.from_settings(Settings.from_env()).open_table(RECORDS)
        raise AssertionError("a wiped table was recreated empty")
    except LanceTableLost as exc:
        assert f"{s3_location.uri}/lance/{RECORDS}.lance is gone" in str(exc)
    recall = _cli("recall", "prompt", env=dict(os.environ))
    assert recall.returncode == 2 and "sessionlake memory rebuild" in recall.stderr, recall.stderr
    assert next(iter(blobs.list(f"lance/{RECORDS}.lance/")), None) is None


def test_recall_refuses_when_the_table_it_writes_to_is_gone(settings, tmp_path):
    """Recall reads the ledger only when a table folder is missing; the provenance table it appends
    to is then refused, not created afresh (its entries are not re-derivable)."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    assert _cli("ingest", env=env).returncode == 0
    assert _cli("recall", "push to github", env=env).returncode == 0  # creates and records provenance
    table = settings.lance_dir / f"{PROVENANCE}.lance"
    assert table.is_dir()
    shutil.rmtree(table)
    out = _cli("recall", "push to github", env=env)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.startswith(f"sessionlake recall: Lance table 'provenance' at {table} is gone"), out.stderr
    assert "start it again, empty (what it held is not in the archive)" in out.stderr, out.stderr
    assert not table.exists(), "recall recreated the lost provenance table empty"


def test_a_table_created_and_recorded_after_the_folder_check_is_not_lost(settings):
    """The interleaving of an ingest with a first recall (the MCP test met it under load): this process
    finds no provenance folder, then another creates the table and records it in the ledger before this
    one reads the ledger. The table is there: nothing is lost."""
    from resources.memory.table_ledger import lost_tables

    ingest, recall = LanceStore.from_settings(settings), LanceStore.from_settings(settings)
    assert not ingest.table_exists(PROVENANCE)
    recall.dataset(PROVENANCE)  # creates the table and records it
    ingest._refuse_lost(PROVENANCE)  # the ledger now names it: raised LanceTableLost before the fix
    assert ingest.open_table(PROVENANCE).count_rows() == 0
    assert lost_tables(settings) == []


def test_recall_answers_while_another_process_holds_the_warehouse(settings, tmp_path):
    """With every table folder there, the lost-table check reads no warehouse: a recall during an
    ingest (which holds state.duckdb) answers at once instead of waiting for the lock."""
    import duckdb

    from resources.ingest.processors.memory import MemoryProcessor
    from resources.ingest.runner import run_processors
    from resources.state.store import StateStore

    store = LanceStore.from_settings(settings)
    assert run_processors([MemoryProcessor(store)], settings.sessions_dir,
                          StateStore.from_settings(settings))["memory"]["errors"] == 0
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster"), "SESSIONLAKE_WAREHOUSE_LOCK_WAIT_SEC": "1"}
    first = _cli("recall", "push to github", "--json", env=env)  # creates and records provenance
    assert first.returncode == 0, first.stderr
    held = duckdb.connect(str(settings.state_path))
    try:
        again = _cli("recall", "push to github", "--json", env=env)
    finally:
        held.close()
    assert again.returncode == 0 and again.stdout == first.stdout, again.stderr


def test_a_lost_table_says_how_much_of_the_memory_the_archive_holds(settings, tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster")}
    assert _cli("ingest", "--only", "memory", env=env).returncode == 0  # memory written, nothing archived
    shutil.rmtree(settings.lance_dir / f"{RECORDS}.lance")
    out = _cli("recall", "push to github", env=env)
    assert out.returncode == 2
    assert out.stderr.rstrip().endswith("(it holds 0 of the 4 session files the memory was built from)"), out.stderr
