"""The archive processor through the real runner: what each kind of change stores, one pack per project."""

from __future__ import annotations

import shutil

import pytest

from resources.archive import pack_format
from tests.archive_support import grow, ingest, pack_store, rewrite, session_files
from tests.conftest import SAMPLE_PROJECT

pytestmark = pytest.mark.unit

BIG = f"{SAMPLE_PROJECT}/d3ad4cdc-5657-435d-98fa-0035d53e383d.jsonl"
SMALL = f"{SAMPLE_PROJECT}/fed8ce56-bc79-401f-a83e-af084253362f.jsonl"
OTHER = "-Users-chip-dev-other"


@pytest.fixture
def store(settings):
    return pack_store(settings)


def _objects(store) -> dict[str, int]:
    with store.state.connect() as conn:
        return dict(conn.execute("SELECT object_id, size FROM pack_index").fetchall())


def test_new_files_are_stored_whole_one_pack_per_project(store, samples_root):
    shutil.copytree(samples_root / SAMPLE_PROJECT, samples_root / OTHER)
    (samples_root / OTHER / "extra.jsonl").write_bytes(b'{"type":"summary","summary":"only here"}\n')

    stats = ingest(store, samples_root)

    assert stats["processed"] == 9 and stats["errors"] == 0
    assert stats["packs_written"] == 2 and stats["versions_archived"] == 9
    assert sorted(p["repo"] for p in store.live_packs()) == sorted([OTHER, SAMPLE_PROJECT])
    sizes = {k: len(v) for k, v in session_files(samples_root).items()}
    for key, size in sizes.items():
        [version] = store.versions(key.split("/")[0], key)
        assert version.snapshot.size == size
        assert [_objects(store)[c] for c in version.snapshot.chunks] == [size]
    # identical files in two projects are indexed once per repo: 4 shared + 1 extra objects, 9 rows
    with store.state.connect() as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT object_id) FROM pack_index").fetchall() == [(9, 5)]
    assert not list(store.packs_dir.glob(".spool-*"))


def test_unchanged_tree_writes_no_pack(store, samples_root):
    ingest(store, samples_root)
    stats = ingest(store, samples_root)
    assert stats["packs_written"] == 0
    assert len(store.live_packs()) == 1


def test_grown_file_stores_only_its_tail(store, samples_root):
    ingest(store, samples_root)
    appended = grow(samples_root / BIG, n=5)

    stats = ingest(store, samples_root)

    assert stats["processed"] == 1 and stats["packs_written"] == 1
    first, second = (v.snapshot for v in store.versions(SAMPLE_PROJECT, BIG))
    assert second.chunks[:-1] == first.chunks
    assert _objects(store)[second.chunks[-1]] == len(appended)
    assert store.live_packs()[-1]["object_count"] == 1


def test_rewritten_file_is_stored_whole_again(store, samples_root):
    ingest(store, samples_root)
    grow(samples_root / SMALL, n=50)  # larger, so the runner sees it change size
    ingest(store, samples_root)
    rewrite(samples_root / SMALL, keep_lines=1)

    ingest(store, samples_root)

    versions = [v.snapshot for v in store.versions(SAMPLE_PROJECT, SMALL)]
    assert len(versions) == 3
    assert versions[2].chunks and not set(versions[2].chunks) & set(versions[1].chunks)
    assert sum(_objects(store)[c] for c in versions[2].chunks) == (samples_root / SMALL).stat().st_size


def test_partial_last_line_is_archived_byte_exact_then_completed_by_a_tail(store, samples_root, tmp_path):
    path = samples_root / SAMPLE_PROJECT / "live.jsonl"
    path.write_bytes(b'{"type":"user","uuid":"a"}\n{"type":"assist')
    ingest(store, samples_root)
    with open(path, "ab") as f:
        f.write(b'ant","uuid":"b"}\n')
    ingest(store, samples_root)

    first, second = (v.snapshot for v in store.versions(SAMPLE_PROJECT, f"{SAMPLE_PROJECT}/live.jsonl"))
    assert second.chunks[0] == first.chunks[0] and len(second.chunks) == 2
    path.unlink()
    store.restore(SAMPLE_PROJECT, tmp_path / "out", session_key=f"{SAMPLE_PROJECT}/live.jsonl")
    assert (tmp_path / "out" / SAMPLE_PROJECT / "live.jsonl").read_bytes() == (
        b'{"type":"user","uuid":"a"}\n{"type":"assistant","uuid":"b"}\n'
    )


def test_large_files_are_cut_into_bounded_chunks(store, samples_root, tmp_path, monkeypatch):
    monkeypatch.setattr(pack_format, "CHUNK_BYTES", 100_000)
    ingest(store, samples_root)
    [version] = store.versions(SAMPLE_PROJECT, BIG)
    sizes = [_objects(store)[c] for c in version.snapshot.chunks]
    assert len(sizes) == 9 and max(sizes) == 100_000 and sum(sizes) == version.snapshot.size
    originals = session_files(samples_root)
    shutil.rmtree(samples_root)
    store.restore(SAMPLE_PROJECT, tmp_path / "out")
    assert session_files(tmp_path / "out") == originals
