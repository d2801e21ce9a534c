"""Migrating a store written by the code before the provenance table (a JSON column on records)."""

from __future__ import annotations

import lancedb
import orjson
import pyarrow as pa
import pytest
from lancedb.index import FTS, BTree

from resources.memory import provenance_migration as pm
from resources.memory.lance import LanceStore
from resources.memory.recall import recall
from resources.memory.schema import ID_INDEX, PROVENANCE, RECORDS, RECORDS_SCHEMA, TEXT_INDEX, new_record

pytestmark = pytest.mark.unit

N = 60
OLD_RECORDS_SCHEMA = RECORDS_SCHEMA.insert(RECORDS_SCHEMA.get_field_index("created_at"),
                                           pa.field("provenance", pa.string()))
"""``records`` as the code before this table wrote it: a JSON provenance list per row, before created_at."""


def _old_cells() -> dict[str, str | None]:
    cells: dict[str, str | None] = {}
    for i in range(N):
        entries = [{"ts": f"2025-06-0{1 + n % 9}T10:00:00+00:00", "cue": f"cue {i}-{n}", "session_id": f"s{n}"}
                   for n in range(i % 5)]
        cells[f"r{i}"] = None if i % 7 == 0 else orjson.dumps(entries).decode()
    cells["r1"] = '[{"cue": "a", "rank": 3, "extra": {"k": [1, 2]}}, {"cue": "b"}]'
    return cells


def _write_old_store(path, cells: dict[str, str | None]) -> None:
    """The old layout, written with lancedb directly: records with the column, indexes as the old code built them."""
    db = lancedb.connect(str(path))
    rows = []
    for rid, cell in cells.items():
        row = new_record(rid, f"old note {rid} about the walrus migration", tier="episodic")
        rows.append({**row, "provenance": cell})
    table = db.create_table(RECORDS, pa.Table.from_pylist(rows, schema=OLD_RECORDS_SCHEMA))
    table.create_index("id", config=BTree(), name=ID_INDEX)
    table.create_index("text", config=FTS(with_position=True), name=TEXT_INDEX)


def _expected(cells) -> dict[str, list[dict]]:
    return {rid: orjson.loads(cell) for rid, cell in cells.items() if cell and orjson.loads(cell)}


def test_entries_move_out_of_the_column_counted_then_the_column_is_dropped(tmp_path):
    cells = _old_cells()
    _write_old_store(tmp_path / "lance", cells)
    expected = _expected(cells)
    store = LanceStore(tmp_path / "lance")
    assert "provenance" not in store.open_table(RECORDS).schema.names
    assert store.count(RECORDS) == N
    assert store.count(PROVENANCE) == sum(len(v) for v in expected.values())
    got = store.get_many(list(cells))
    assert {rid: row["provenance"] for rid, row in got.items() if row["provenance"]} == expected
    assert got["r0"]["provenance"] == [] and got["r5"]["provenance"] == []
    assert got["r1"]["provenance"][0] == {"cue": "a", "rank": 3, "extra": {"k": [1, 2]}}
    # new entries come after the migrated ones; the text index survived the column drop
    hits = recall(store, "walrus migration", "after", k=3)
    assert hits and store.open_table(RECORDS).index_stats(TEXT_INDEX).num_indexed_rows == N
    for hit in hits:
        after = store.get(hit["id"])["provenance"]
        assert after[:-1] == expected.get(hit["id"], []) and after[-1]["session_id"] == "after"
    # opening again is a no-op
    count = store.count(PROVENANCE)
    assert pm.migrate_provenance_column(LanceStore(tmp_path / "lance")) == 0
    assert store.count(PROVENANCE) == count


def test_a_malformed_cell_is_kept_as_one_unparsed_entry(tmp_path):
    cells = {"r1": '[{"cue": "fine"}]', "r2": "not json [", "r3": '{"not": "a list"}'}
    _write_old_store(tmp_path / "lance", cells)
    store = LanceStore(tmp_path / "lance")
    assert store.get("r1")["provenance"] == [{"cue": "fine"}]
    assert store.get("r2")["provenance"] == [{"unparsed": "not json ["}]
    assert store.get("r3")["provenance"] == [{"unparsed": '{"not": "a list"}'}]


def test_an_interrupted_migration_is_redone_without_duplicates(tmp_path):
    cells = _old_cells()
    _write_old_store(tmp_path / "lance", cells)
    expected = _expected(cells)
    # a migration that died after appending part of the entries, before dropping the column
    partial = [pm.provenance_row(f"{pm.MIGRATED_ID_PREFIX}r1-{n:08d}", "r1", e) for n, e in enumerate(expected["r1"])]
    lancedb.connect(str(tmp_path / "lance")).create_table(
        PROVENANCE, pa.Table.from_pylist(partial, schema=pm.PROVENANCE_SCHEMA))
    store = LanceStore(tmp_path / "lance")
    assert store.count(PROVENANCE) == sum(len(v) for v in expected.values())
    assert store.get("r1")["provenance"] == expected["r1"]


def test_a_count_mismatch_keeps_the_column_and_says_so(tmp_path, monkeypatch):
    cells = _old_cells()
    _write_old_store(tmp_path / "lance", cells)
    real = pm.provenance_row

    def one_lands_elsewhere(entry_id, record_id, entry):  # one entry written under a non-migration id
        return real("X" + entry_id if record_id == "r1" and entry_id.endswith("1") else entry_id, record_id, entry)

    monkeypatch.setattr(pm, "provenance_row", one_lands_elsewhere)
    with pytest.raises(pm.ProvenanceMigrationError, match="column was kept"):
        LanceStore(tmp_path / "lance")
    records = lancedb.connect(str(tmp_path / "lance")).open_table(RECORDS)
    assert "provenance" in records.schema.names
    kept = records.search().where("id = 'r1'").select(["provenance"]).to_list()[0]["provenance"]
    assert kept == cells["r1"]
