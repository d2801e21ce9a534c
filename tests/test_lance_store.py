"""LanceStore on real Lance tables in a tmp dir: schemas, one-commit upserts, provenance, events, FTS."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from resources.config.settings import Settings
from resources.ids import new_ulid
from resources.memory.events import query_events, write_event
from resources.memory.lance import LanceStore
from resources.memory.schema import (
    EDGES,
    EVENTS,
    ID_LOOKUP_CHUNK,
    INDEX_DELTA_ROWS,
    PROVENANCE,
    RECORDS,
    RECORDS_SCHEMA,
    TABLE_NAMES,
    TEXT_INDEX,
    TEXT_INDEX_PARAMS,
    edge_id,
    new_record,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path) -> LanceStore:
    return LanceStore(tmp_path / "lance")


def _rec(i: int, text: str | None = None, **kw) -> dict:
    return new_record(f"r{i}", text or f"prompt number {i}", tier="episodic", **kw)


def test_tables_are_created_with_their_schemas(store):
    for name in TABLE_NAMES:
        assert store.count(name) == 0
    assert store.open_table(RECORDS).schema.names == RECORDS_SCHEMA.names
    assert sorted(p.name for p in store.root.iterdir()) == sorted(f"{n}.lance" for n in TABLE_NAMES)
    with pytest.raises(ValueError, match="unknown table"):
        store.open_table("nope")


def test_from_settings_uses_the_data_home(tmp_path):
    store = LanceStore.from_settings(Settings(home=tmp_path, sessions_dir=tmp_path / "s"))
    assert store.root == tmp_path / "lance"
    assert store.provenance_overflow_dir == tmp_path / "provenance-overflow"
    assert store.embedding is None


def test_upsert_is_one_commit_per_call_and_idempotent(store):
    store.upsert_records([_rec(0)])  # creates the table and its indexes
    before = store.version(RECORDS)
    rows = [_rec(i) for i in range(500)]
    assert store.upsert_records(rows) == 500
    # one merge commit, whatever the number of rows, plus one that indexes the new rows as a segment
    assert store.version(RECORDS) == before + 2
    assert store.upsert_records(rows) == 500
    assert store.count(RECORDS) == 500
    assert store.upsert_records([]) == 0
    assert store.upsert_edges([]) == 0


@pytest.mark.parametrize(("stored", "indexed"), [(ID_LOOKUP_CHUNK + 1, True), (20 * (ID_LOOKUP_CHUNK + 1), False),
                                                 (20 * (ID_LOOKUP_CHUNK + 1), True)])
def test_a_large_reupsert_keeps_created_at_whether_its_ids_are_looked_up_or_scanned(store, stored, indexed):
    """A batch of more than ID_LOOKUP_CHUNK ids is matched in one scan when it is a large share of the
    table or the table has no id index yet (a first ingest's commits), by id lookups when it is small
    beside an indexed table: either way the stored records keep their created_at and the new ones get
    theirs."""
    store.upsert_records([_rec(i) for i in range(stored)], index=indexed)
    first = {r["id"]: r["created_at"] for r in store.records_where("TRUE", ["id", "created_at"])}
    time.sleep(0.01)
    again = [_rec(i, f"edited {i}") for i in range(stored - ID_LOOKUP_CHUNK - 1, stored + 5)]
    store.upsert_records(again, index=False)
    after = {r["id"]: (r["created_at"], r["text"]) for r in store.records_where("TRUE", ["id", "created_at", "text"])}
    assert len(after) == stored + 5
    assert all(after[i][0] == created for i, created in first.items())
    assert all(after[r["id"]][0] > max(first.values()) for r in again[-5:])
    assert after[f"r{stored - 1}"][1] == f"edited {stored - 1}"


def test_empty_batch_commits_nothing(store):
    store.upsert_records([_rec(1)])
    version = store.version(RECORDS)
    store.upsert_records([])
    store.append_provenance_batch([])
    assert store.version(RECORDS) == version


def test_get_decodes_provenance_and_reupsert_keeps_it(store):
    store.upsert_records([_rec(1, timestamp="2025-06-08T10:47:08.446Z", tags=["b", "a", "a"])])
    rec = store.get("r1")
    assert rec["provenance"] == []
    assert rec["timestamp"] == datetime(2025, 6, 8, 10, 47, 8, 446000, tzinfo=UTC)
    assert rec["tags"] == ["a", "b"]
    created = rec["created_at"]
    assert store.append_provenance_batch([("r1", {"cue": "x"}), ("missing", {"cue": "y"}), ("r1", {"cue": "z"})]) == 1
    store.upsert_records([_rec(1, text="edited text")])
    rec = store.get("r1")
    assert rec["text"] == "edited text"
    assert [e["cue"] for e in rec["provenance"]] == ["x", "z"]
    assert rec["created_at"] == created
    assert store.get("missing") is None


def test_provenance_batch_is_one_commit(store):
    store.upsert_records([_rec(i) for i in range(50)])
    records, version = store.version(RECORDS), store.version(PROVENANCE)
    pairs = [(f"r{i % 50}", {"n": i}) for i in range(200)]
    assert store.append_provenance_batch(pairs) == 50
    assert store.version(PROVENANCE) == version + 1
    assert store.version(RECORDS) == records  # append-only: records is never rewritten for provenance
    assert [e["n"] for e in store.get("r7")["provenance"]] == [7, 57, 107, 157]
    assert store.count(PROVENANCE) == 200
    store.append_provenance_batch([("r7", {"n": 1000, "cue": "late", "session_id": "s", "ts": "2025-06-08T10:00:00Z"})])
    assert [e["n"] for e in store.get("r7")["provenance"]] == [7, 57, 107, 157, 1000]
    row = store.open_table(PROVENANCE).search().where("cue = 'late'").to_list()[0]
    assert (row["record_id"], row["session_id"], row["ts"]) == ("r7", "s", datetime(2025, 6, 8, 10, tzinfo=UTC))


def test_a_retried_provenance_batch_with_the_same_entry_ids_lands_once(store):
    store.upsert_records([_rec(i) for i in range(3)])
    pairs = [("r1", {"n": 1}), ("r2", {"n": 2}), ("r1", {"n": 3})]
    ids = [new_ulid() for _ in pairs]
    assert store.append_provenance_batch(pairs[:2], ids[:2]) == 2  # the first attempt landed in part
    version = store.version(PROVENANCE)
    assert store.append_provenance_batch(pairs, ids, retried=True) == 1
    assert store.append_provenance_batch(pairs, ids, retried=True) == 0
    assert store.version(PROVENANCE) == version + 1  # a retry with nothing left to add commits nothing
    assert [e["n"] for e in store.get("r1")["provenance"]] == [1, 3]
    assert store.count(PROVENANCE) == 3
    with pytest.raises(ValueError, match="2 entry ids for 3 pairs"):
        store.append_provenance_batch(pairs, ids[:2])


def test_edges_have_stable_ids(store):
    rows = [{"src": "a", "dst": "b", "edge_type": "reply_to"}, {"src": "a", "dst": "b", "edge_type": "reply_to"},
            {"src": "b", "dst": "c", "edge_type": "reply_to", "weight": 2}]
    assert store.upsert_edges(rows) == 2
    store.upsert_edges(rows)
    assert store.count(EDGES) == 2
    ids = set(store.open_table(EDGES).to_arrow()["id"].to_pylist())
    assert edge_id("a", "b", "reply_to") in ids


def _fts(store, cue: str, k: int = 5) -> list[tuple[str, float]]:
    hits = store.open_table(RECORDS).search(cue, query_type="fts").select(["id", "_score"]).limit(k).to_list()
    return [(h["id"], h["_score"]) for h in hits]


def test_fts_is_rebuilt_by_policy_and_unindexed_rows_are_found_meanwhile(store):
    store.upsert_records([_rec(i) for i in range(20)])  # the first upsert builds the index
    indexed = _fts(store, "prompt number", k=20)
    version = store.version(RECORDS)
    store.upsert_records([_rec(100, "a distinctive walrus prompt")])
    assert store.version(RECORDS) == version + 1  # no index rewrite for one new row
    stats = store.open_table(RECORDS).index_stats(TEXT_INDEX)
    assert (stats.num_indexed_rows, stats.num_unindexed_rows) == (20, 1)
    assert [i for i, _ in _fts(store, "walrus")] == ["r100"]  # found before the index catches up
    # indexed rows keep their scores (so their order, ties aside) next to an unindexed row
    mixed = _fts(store, "prompt number", k=21)
    assert {i: s for i, s in mixed if i != "r100"} == dict(indexed) and "r100" in dict(mixed)
    store.append_provenance_batch([("r100", {"cue": "walrus"})])
    store.upsert_records([_rec(100, "an edited zebra prompt")])  # the text changes: search follows
    assert _fts(store, "walrus") == []
    assert [i for i, _ in _fts(store, "zebra")] == ["r100"]
    assert store.get("r100")["provenance"] == [{"cue": "walrus"}]
    # from INDEX_DELTA_ROWS unindexed rows on, the upsert indexes them as a new segment (one more
    # commit), leaving the first segment as it is
    version = store.version(RECORDS)
    store.upsert_records([_rec(1000 + i, f"bulk row {i}") for i in range(INDEX_DELTA_ROWS)])
    assert store.version(RECORDS) == version + 2
    stats = store.open_table(RECORDS).index_stats(TEXT_INDEX)
    assert (stats.num_unindexed_rows, stats.num_indexed_rows, stats.num_indices) == (0, 21 + INDEX_DELTA_ROWS, 2)
    assert [i for i, _ in _fts(store, "zebra")] == ["r100"]
    assert {i: s for i, s in _fts(store, "bulk row 7", k=3)}.keys() >= {"r1007"}


def test_the_full_text_index_is_built_as_lancedb_built_it(store):
    """Writes build the index through pylance with `TEXT_INDEX_PARAMS`: LanceDB's FTS(with_position=True),
    which built the indexes of existing homes (their segments are merged with new ones). A LanceDB
    upgrade that changes its defaults fails here."""
    from lancedb.index import FTS

    lancedb_fts = vars(FTS(with_position=True))
    assert {key: lancedb_fts[key] for key in TEXT_INDEX_PARAMS} == TEXT_INDEX_PARAMS
    store.upsert_records([_rec(i) for i in range(3)])
    params = store.dataset(RECORDS).stats.index_stats(TEXT_INDEX)["segments"][0]["params"]
    assert {key: params[key] for key in TEXT_INDEX_PARAMS} == TEXT_INDEX_PARAMS


def test_events_newest_first_with_filters(store):
    write_event(store, "ingest", {"files": 3})
    time.sleep(0.002)
    cutoff = datetime.now(UTC)
    write_event(store, "maintenance", {"versions": 5}, severity="warning")
    write_event(store, "ingest", {"files": 1}, severity="error")
    events = query_events(store)
    assert [e["kind"] for e in events] == ["ingest", "maintenance", "ingest"]
    assert events[0]["data"] == {"files": 1}
    assert [e["data"]["files"] for e in query_events(store, kind="ingest")] == [1, 3]
    assert [e["kind"] for e in query_events(store, severity="warning")] == ["maintenance"]
    assert len(query_events(store, since=cutoff)) == 2
    assert len(query_events(store, limit=1)) == 1
    assert query_events(store, kind="nothing") == []
    assert store.count(EVENTS) == 3
    with pytest.raises(ValueError, match="severity"):
        write_event(store, "x", {}, severity="loud")
