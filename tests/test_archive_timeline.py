"""The archive keeps the true timeline: a reverted file restores as it is now, ``--at`` as it was then,
and a renamed project folder is followed without counting anything twice."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

import duckdb
import pytest

from resources.state.migrations import LATEST_VERSION, MIGRATIONS
from resources.state.store import StateStore
from tests.archive_support import ingest, pack_store, rewrite, session_files
from tests.conftest import SAMPLE_PROJECT
from tests.test_archive_cli import SMALL, cli
from tests.test_usage import SAMPLE_TOTALS

pytestmark = pytest.mark.integration


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def test_a_file_that_goes_a_b_a_restores_as_a_and_at_gives_what_was_on_disk(settings, samples_root, tmp_path):
    path = samples_root / SMALL
    now = time.time()
    a = path.read_bytes()
    os.utime(path, (now - 300, now - 300))
    ingest(pack_store(settings), samples_root)
    rewrite(path)
    b = path.read_bytes()
    os.utime(path, (now - 200, now - 200))
    ingest(pack_store(settings), samples_root)
    path.write_bytes(a)
    os.utime(path, (now - 100, now - 100))
    assert ingest(pack_store(settings), samples_root)["processed"] == 1
    assert cli(settings, "archive", "gc").returncode == 0  # the timeline survives consolidation

    def restored(name, *at):
        result = cli(settings, "restore", SAMPLE_PROJECT.lstrip("-"), "--session", path.stem, *at,
                     "--to", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        return (tmp_path / name / SMALL).read_bytes(), (tmp_path / name / SMALL).stat().st_mtime

    assert restored("latest") == (a, now - 100)
    assert restored("during-b", "--at", _iso(now - 150)) == (b, now - 200)
    assert restored("first-a", "--at", _iso(now - 250)) == (a, now - 300)
    before = cli(settings, "restore", SAMPLE_PROJECT.lstrip("-"), "--session", path.stem, "--at", _iso(now - 400),
                 "--to", str(tmp_path / "x"))
    assert before.returncode == 1 and "no archived version" in before.stderr  # nothing found
    assert len(pack_store(settings).timeline(SAMPLE_PROJECT, SMALL)) == 3
    listed = cli(settings, "archive", "ls", SAMPLE_PROJECT, "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [r for r in json.loads(listed.stdout)["sessions"] if r["session"] == SMALL]
    assert (row["versions"], row["size"]) == (2, len(a)) and len(a) != len(b)  # A's size, as restore gives A


def test_a_renamed_project_folder_moves_usage_rows_and_counts_nothing_twice(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    assert cli(settings, "ingest", "--only", "usage", "--only", "archive").returncode == 0
    renamed = settings.sessions_dir / "-Users-chip-dev-music"
    (settings.sessions_dir / SAMPLE_PROJECT).rename(renamed)
    again = cli(settings, "ingest", "--only", "usage", "--only", "archive", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["projects"] == [renamed.name]

    report = json.loads(cli(settings, "usage", "project", "--json").stdout)
    assert [p["project"] for p in report["projects"]] == [renamed.name]
    assert {k: report["totals"][k] for k in SAMPLE_TOTALS} == SAMPLE_TOTALS
    with duckdb.connect(str(settings.state_path), read_only=True) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT dedup_key) FROM usage_messages").fetchall() == [(90, 90)]
    originals = session_files(settings.sessions_dir)
    restore = cli(settings, "restore", renamed.name.lstrip("-"), "--to", str(tmp_path / "new"))
    assert restore.returncode == 0, restore.stderr
    assert session_files(tmp_path / "new") == originals
    old = cli(settings, "restore", SAMPLE_PROJECT.lstrip("-"), "--to", str(tmp_path / "old"))  # still archived
    assert old.returncode == 0 and len(session_files(tmp_path / "old")) == len(originals)


def test_migration_gives_every_archived_version_of_an_older_database_one_observation(tmp_path):
    path = tmp_path / "state.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)")
        for version, statements in MIGRATIONS[:4]:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, now())", [version])
        conn.execute("""INSERT INTO snapshots VALUES
                          ('p', 'p/s.jsonl', 'h1', 10, 111, ['sha256:a'], 'k', '2025-06-01'),
                          ('p', 'p/s.jsonl', 'h2', 20, 222, ['sha256:b'], 'k', '2025-06-02')""")
    store = StateStore(path)
    with store.connect() as conn:
        rows = conn.execute("SELECT file_hash, mtime_ns, observed_at::DATE::VARCHAR FROM snapshot_observations "
                            "ORDER BY 1").fetchall()
    assert rows == [("h1", 111, "2025-06-01"), ("h2", 222, "2025-06-02")]
    assert store.schema_version() == LATEST_VERSION
