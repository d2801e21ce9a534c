"""The Lance memory on object storage (moto's S3 API on loopback): tables, recall-side reads, health
measures, and concurrent writers from separate processes, none of whose commits may be lost."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from resources.config.settings import Settings
from resources.memory import maintenance as lm
from resources.memory.lance import LanceStore
from resources.memory.schema import EDGES, RECORDS, TABLE_NAMES, new_record

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
ROWS_PER_WRITER = 8

WRITER = r"""
import sys, time
from pathlib import Path
from resources.memory.lance import LanceStore
from resources.memory.schema import new_record
from resources.objectstore.location import StorageLocation
store = LanceStore(StorageLocation.parse(sys.argv[1]))
name, go, n = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
while not go.exists():
    time.sleep(0.005)
for i in range(n):
    store.upsert_records([new_record(f"{name}-{i}", f"written by {name}, row {i}", tier="episodic")])
    print(i, flush=True)
"""


def test_storage_uri_puts_the_tables_in_the_bucket(s3_location, tmp_path, monkeypatch):
    monkeypatch.setenv("SESSIONLAKE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SESSIONLAKE_STORAGE_URI", s3_location.uri)
    store = LanceStore.from_settings(Settings.from_env())
    assert store.uri == f"{s3_location.uri}/lance" and store.root is None
    store.upsert_records([new_record(f"r{i}", f"text number {i}", tier="episodic") for i in range(5)])
    assert store.count(RECORDS) == 5 and store.get("r3")["text"] == "text number 3"
    names = {b.name.split("/")[1] for b in s3_location.blobs().list("lance/")}
    assert f"{RECORDS}.lance" in names
    assert not (tmp_path / "home" / "lance").exists()
    health = lm.measure_table(store, RECORDS, retention_sec=0)
    assert health.rows == 5 and health.versions == store.version(RECORDS) and health.size_bytes > 0
    assert health.prunable_versions == health.versions - 1
    report = lm.optimize_lance_storage(store, timedelta(0))
    assert "error" not in report[RECORDS], report[RECORDS]
    assert store.count(RECORDS) == 5 and lm.count_versions(store, RECORDS) <= 2
    assert not store.unreadable_tables(TABLE_NAMES)


def test_concurrent_writers_on_s3_lose_no_commit(s3_location, tmp_path):
    store = LanceStore(s3_location.child("lance"))
    store.open_table(RECORDS)  # created once, before the race
    store.open_table(EDGES)
    go = tmp_path / "go"
    procs = {name: subprocess.Popen([sys.executable, "-c", WRITER, s3_location.child("lance").uri, name, str(go),
                                     str(ROWS_PER_WRITER)], cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name in ("a", "b", "c")}
    time.sleep(1.0)
    go.touch()
    outputs = {name: p.communicate(timeout=240) for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, outputs[name][1][-2000:]
        assert outputs[name][0].split() == [str(i) for i in range(ROWS_PER_WRITER)]
    ids = sorted(r["id"] for r in store.records_where("true", ["id"]))
    assert ids == sorted(f"{n}-{i}" for n in "abc" for i in range(ROWS_PER_WRITER))
    assert store.version(RECORDS) >= 3 * ROWS_PER_WRITER  # every commit is a version of its own
