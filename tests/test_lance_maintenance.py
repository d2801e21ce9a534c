"""The Lance optimize/cleanup helper on real Lance tables in a tmp dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
from lance.commit import CommitConflictError

from resources.memory import maintenance as lm
from resources.memory.events import query_events, write_event
from resources.memory.lance import LanceStore
from resources.memory.schema import (
    EDGES,
    EVENTS,
    ID_INDEX,
    INDEX_DELTA_ROWS,
    INDEX_TIER_RATIO,
    PROVENANCE,
    RECORD_ID_INDEX,
    RECORDS,
    TABLE_NAMES,
    TEXT_INDEX,
    new_edge,
    new_record,
)

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("rows_before", "rows_after", "versions_before", "versions_after", "size_bytes_before",
            "size_bytes_after", "fragments_before", "fragments_after", "elapsed_sec")

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore:optimize")]


@pytest.fixture
def store(tmp_path):
    return LanceStore(tmp_path / "lance")


def ten_small_writes(store):
    for i in range(10):
        store.upsert_records([new_record(f"r{i}", f"lance maintenance note {i}", tier="episodic")])
        store.upsert_edges([new_edge(f"r{i}", f"r{i + 1}", "next")])
        write_event(store, "test_write", {"i": i})
        store.append_provenance_batch([(f"r{i}", {"cue": f"note {i}"})])


def test_report_has_exactly_the_four_tables_and_every_field(store):
    ten_small_writes(store)
    report = lm.optimize_lance_storage(store, timedelta(0))
    assert set(report) == set(TABLE_NAMES) == {RECORDS, EDGES, EVENTS, PROVENANCE}
    for entry in report.values():
        assert set(REQUIRED) <= set(entry)
        assert "error" not in entry
        assert entry["elapsed_sec"] >= 0


def test_ten_small_writes_versions_drop_rows_kept_and_recall_still_works(store):
    ten_small_writes(store)
    report = lm.optimize_lance_storage(store, timedelta(0))
    for name in TABLE_NAMES:
        entry = report[name]
        assert entry["rows_before"] == entry["rows_after"] == 10, name
        assert entry["versions_after"] < entry["versions_before"], name
        assert entry["fragments_after"] < entry["fragments_before"], name
        assert entry["size_bytes_after"] < entry["size_bytes_before"], name
    # the report's own event is one more commit on events, after it was measured
    assert lm.count_versions(store, EVENTS) == report[EVENTS]["versions_after"] + 1
    hits = store.open_table(RECORDS).search("maintenance", query_type="fts").limit(100).to_arrow()
    assert sorted(hits["id"].to_pylist()) == sorted(f"r{i}" for i in range(10))
    assert [e["cue"] for e in store.get("r3")["provenance"]] == ["note 3"]


def test_maintenance_indexes_every_row_and_keeps_a_base_and_a_recent_segment(store):
    ten_small_writes(store)
    assert store.open_table(PROVENANCE).list_indices() == []
    store.upsert_records([new_record(f"b{i}", f"base note {i}", tier="episodic") for i in range(30)])

    def segments():  # rows per text-index segment, oldest first, and the rows no segment covers
        stats = store.open_table(RECORDS).to_lance().stats.index_stats(TEXT_INDEX)
        return stats["num_indexed_rows_per_delta"], stats["num_unindexed_rows"]

    assert segments() == ([1], 39)  # r0 made the index; the rest came in batches under INDEX_DELTA_ROWS
    lm.optimize_lance_storage(store, timedelta(0))
    assert segments() == ([40], 0)  # 39 recent rows >= INDEX_TIER_RATIO of 1: merged into one
    assert store.open_table(PROVENANCE).index_stats(RECORD_ID_INDEX).num_indexed_rows == 10
    for i in range(3):
        store.upsert_records([new_record(f"n{i}", f"new note {i}", tier="episodic")])
        store.append_provenance_batch([(f"n{i}", {"cue": "new"})])
    lm.optimize_lance_storage(store, timedelta(0))
    assert segments() == ([40, 3], 0)  # only the new rows were indexed, as the recent segment
    # B-trees wait for INDEX_DELTA_ROWS: scanning a few unindexed ids is cheaper than a segment
    assert store.open_table(RECORDS).index_stats(ID_INDEX).num_unindexed_rows == 42 < INDEX_DELTA_ROWS
    assert store.open_table(PROVENANCE).index_stats(RECORD_ID_INDEX).num_unindexed_rows == 3
    for i in range(3, 5):
        store.upsert_records([new_record(f"n{i}", f"new note {i}", tier="episodic")])
    lm.optimize_lance_storage(store, timedelta(0))
    assert segments() == ([40, 5], 0)  # the recent segment was rewritten with them, the base was not
    assert 5 < INDEX_TIER_RATIO * 40 <= 10
    for i in range(5, 10):
        store.upsert_records([new_record(f"n{i}", f"new note {i}", tier="episodic")])
    lm.optimize_lance_storage(store, timedelta(0))
    assert segments() == ([50], 0)  # recent reached INDEX_TIER_RATIO of the base: one segment again
    hits = store.open_table(RECORDS).search("note", query_type="fts").limit(100).to_arrow()
    assert len(hits) == 50


def test_compaction_is_size_tiered_a_big_fragment_is_left_alone_until_the_newer_rows_catch_up(store):
    store.open_table(EVENTS).add([{"id": f"bulk{i:03d}", "kind": "bulk", "data": "{}"} for i in range(400)])
    for i in range(20):
        write_event(store, "small", {"i": i})

    def fragments():
        return [(f.fragment_id, f.count_rows()) for f in store.open_table(EVENTS).to_lance().get_fragments()]

    first = fragments()[0]
    lm.optimize_lance_storage(store, timedelta(0))  # 400 >= 4 x 20: only the 20 small ones are merged
    assert fragments()[0] == first and [n for _, n in fragments()] == [400, 20, 1]  # 1: the report's event
    for i in range(90):
        write_event(store, "small", {"i": i})
    lm.optimize_lance_storage(store, timedelta(0))  # 400 < 4 x 111: everything merges into one
    assert [n for _, n in fragments()] == [511, 1]


def test_compaction_exclusions_tiers_by_rows_and_rewrites_a_fragment_with_deletions():
    from types import SimpleNamespace

    def frag(id, rows, deleted=0):
        return SimpleNamespace(id=id, physical_rows=rows, num_deletions=deleted)

    assert lm.compaction_exclusions([]) == []
    assert lm.compaction_exclusions([frag(0, 1000)]) == []  # nothing newer: nothing to protect it from
    assert lm.compaction_exclusions([frag(0, 1000), frag(1, 200), frag(2, 10), frag(3, 5)]) == [0, 1]
    assert lm.compaction_exclusions([frag(0, 1000), frag(1, 300)]) == []  # 1000 < 4 x 300
    assert lm.compaction_exclusions([frag(0, 1000, deleted=150), frag(1, 5)]) == []


def test_retention_keeps_young_versions_but_still_compacts(store):
    ten_small_writes(store)
    versions = lm.count_versions(store, EDGES)
    report = lm.optimize_lance_storage(store, timedelta(hours=1))
    assert report[EDGES]["versions_removed"] == 0
    assert report[EDGES]["versions_after"] > versions
    assert report[EDGES]["fragments_after"] == 1
    assert report[EDGES]["rows_after"] == 10


def test_a_table_that_cannot_be_opened_gets_error_and_the_others_are_optimized(store):
    ten_small_writes(store)
    for manifest in (lm.table_dir(store, EDGES) / "_versions").glob("*.manifest"):
        manifest.write_bytes(b"not a manifest")
    report = lm.optimize_lance_storage(store, timedelta(0))
    assert set(report) == set(TABLE_NAMES)
    assert "edges" in report[EDGES]["error"] and report[EDGES]["error"].startswith("open")
    assert report[EDGES]["rows_after"] is None
    for name in (RECORDS, EVENTS, PROVENANCE):
        assert "error" not in report[name]
        assert report[name]["versions_after"] < report[name]["versions_before"]
    event = query_events(store, kind=lm.OPTIMIZED_EVENT)[0]
    assert event["severity"] == "warning"
    assert "error" in event["data"]["per_table"][EDGES]


def test_each_call_writes_one_optimized_event_with_phase_and_report(store):
    ten_small_writes(store)
    report = lm.optimize_lance_storage(store, timedelta(days=2), phase="threshold")
    events = query_events(store, kind=lm.OPTIMIZED_EVENT)
    assert len(events) == 1
    data = events[0]["data"]
    assert data["phase"] == "threshold"
    assert data["retention_days"] == pytest.approx(2.0)
    assert data["per_table"] == json.loads(json.dumps(report))
    assert data["total_elapsed_sec"] >= 0
    lm.optimize_lance_storage(store, timedelta(days=2))
    assert [e["data"]["phase"] for e in query_events(store, kind=lm.OPTIMIZED_EVENT)] == ["manual", "threshold"]


def test_bad_phase_or_negative_retention_is_refused_before_touching_anything(store):
    ten_small_writes(store)
    before = lm.count_versions(store, RECORDS)
    with pytest.raises(ValueError, match="phase"):
        lm.optimize_lance_storage(store, timedelta(0), phase="sometimes")
    with pytest.raises(ValueError, match="negative"):
        lm.optimize_lance_storage(store, timedelta(seconds=-1))
    assert lm.count_versions(store, RECORDS) == before
    assert query_events(store, kind=lm.OPTIMIZED_EVENT) == []


def test_tagged_old_version_is_kept_and_does_not_fail_the_prune(store):
    ten_small_writes(store)
    table = store.open_table(EDGES)
    tagged = table.version - 3
    table.tags.create("before-migration", tagged)
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="tagged"):
        warnings.simplefilter("ignore")
        store.open_table(EDGES).optimize(cleanup_older_than=timedelta(0))  # what lancedb's own optimize does
    report = lm.optimize_lance_storage(store, timedelta(0))
    assert "error" not in report[EDGES]
    assert report[EDGES]["versions_after"] == 2  # the tagged version and the latest
    old = store.open_table(EDGES)
    old.checkout("before-migration")
    assert old.count_rows() == 7


def test_measure_counts_manifests_only(store):
    ten_small_writes(store)
    health = lm.measure_table(store, EDGES)
    files = os.listdir(lm.table_dir(store, EDGES) / "_versions")
    assert "latest_version_hint.json" in files
    assert health.versions == len(files) - 1 == 11
    assert health.rows == 10 and health.fragments == 10 and health.small_fragments == 10
    breaches = lm.threshold_breaches(lm.measure_store(store), versions_threshold=10, small_fragments_threshold=9)
    assert "edges: 11 versions > 10" in breaches
    assert "events: 10 small fragments > 9" in breaches
    assert lm.threshold_breaches(lm.measure_store(store), 100, 32) == []


def test_retention_floor_rule():
    lm.check_retention(3600, 3600)
    lm.check_retention(0, 3600, force=True)
    with pytest.raises(lm.RetentionBelowFloor, match="below the floor"):
        lm.check_retention(60, 3600)
    with pytest.raises(lm.RetentionBelowFloor, match=">= 0"):
        lm.check_retention(-1, 3600, force=True)


def test_commit_conflict_is_retried_with_backoff_then_reported(monkeypatch):
    monkeypatch.setattr(lm, "CONFLICT_BASE_DELAY_SEC", 0.001)
    calls = []

    def flaky():
        calls.append(time.perf_counter())
        if len(calls) < 3:
            raise CommitConflictError("This Rewrite transaction was preempted by concurrent transaction Append")
        return "done"

    retries = [0]
    assert lm._with_conflict_retry("compact", flaky, retries) == "done"
    assert retries == [2] and len(calls) == 3

    def always():
        raise OSError("failed to commit after 20 retries")

    with pytest.raises(lm.CommitConflictPersisted, match="retry later"):
        lm._with_conflict_retry("prune", always, [0])

    def broken():
        raise RuntimeError("corrupt file")

    with pytest.raises(RuntimeError, match="corrupt"):
        lm._with_conflict_retry("compact", broken, [0])


WRITER = r"""
import sys, time
from pathlib import Path
from resources.memory.lance import LanceStore
from resources.memory.schema import new_record
store = LanceStore(sys.argv[1])
stop = Path(sys.argv[2])
batch = 0
while not stop.exists() and batch < 400:
    rows = [new_record(f"w{batch}-{i}", f"concurrent row {batch} {i}", tier="episodic") for i in range(3)]
    while True:
        try:
            store.upsert_records(rows)
            break
        except Exception as exc:  # unacknowledged: a real writer retries the same batch (same ids)
            print("retry", type(exc).__name__, flush=True, file=sys.stderr)
            time.sleep(0.05)
    print(" ".join(r["id"] for r in rows), flush=True)
    batch += 1
    time.sleep(0.02)
"""


@pytest.mark.integration  # other processes
def test_writer_in_another_process_loses_nothing_while_optimize_runs(store, tmp_path):
    ten_small_writes(store)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(store.root), str(stop)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = writer.stdout.readline()
        assert first, writer.stderr.read()
        reports = []
        deadline = time.monotonic() + 20
        while len(reports) < 3 and time.monotonic() < deadline:
            reports.append(lm.optimize_lance_storage(store, timedelta(0), phase="threshold"))
    finally:
        stop.touch()
        rest, _err = writer.communicate(timeout=60)
    acknowledged = (first + rest).split()
    assert len(acknowledged) > 3
    ids = store.open_table(RECORDS).search().select(["id"]).limit(None).to_arrow()["id"].to_pylist()
    assert len(ids) == len(set(ids)), "a row was duplicated"
    assert set(acknowledged) <= set(ids), "an acknowledged row was lost"
    assert len(ids) == 10 + len(acknowledged)
    assert all("error" not in r[RECORDS] or "retry later" in r[RECORDS]["error"] for r in reports)
