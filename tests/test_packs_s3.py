"""PackStore with SESSIONLAKE_STORAGE_URI on a real S3 API server (moto, loopback): the archive's
guarantees hold in a bucket: atomic put-if-absent pack writes, verify on read, GC's grace period,
byte-identical restores, and nothing of the packs left on local disk."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import pytest

from resources.archive.pack_files import BucketPackFiles
from resources.archive.pack_format import PackCorrupt
from resources.archive.packs import PackStore
from resources.config.settings import Settings
from tests.archive_support import grow, ingest, session_files
from tests.conftest import SAMPLE_PROJECT

pytestmark = pytest.mark.integration

BIG = f"{SAMPLE_PROJECT}/d3ad4cdc-5657-435d-98fa-0035d53e383d.jsonl"


@pytest.fixture
def store(s3_location, settings, monkeypatch) -> PackStore:
    monkeypatch.setenv("SESSIONLAKE_STORAGE_URI", s3_location.uri)
    return PackStore.from_settings(Settings.from_env())


def _bucket_packs(store) -> dict[str, int]:
    return {p.name: p.size for p in store.files.stored()}


def test_packs_go_to_the_bucket_and_restore_byte_for_byte(store, samples_root, tmp_path):
    original = session_files(samples_root)
    ingest(store, samples_root)
    [pack] = store.live_packs(SAMPLE_PROJECT)
    assert _bucket_packs(store) == {BucketPackFiles.name(pack["key"]): pack["bytes"]}
    assert not list(store.packs_dir.glob("*.mpack")), "a pack stayed on local disk"
    shutil.rmtree(samples_root)
    results = store.restore(SAMPLE_PROJECT, tmp_path / "out")
    assert {r["status"] for r in results} == {"restored"}
    assert session_files(tmp_path / "out") == original
    assert store.verify()["ok"]


def test_a_pack_write_never_overwrites_and_an_altered_pack_is_refused(store, samples_root, tmp_path):
    ingest(store, samples_root)
    [pack] = store.live_packs(SAMPLE_PROJECT)
    name = BucketPackFiles.name(pack["key"])
    blobs = store.files.blobs
    good = blobs.get_bytes(name)
    altered = bytearray(good)
    altered[len(altered) // 2] ^= 0x01
    blobs.delete(name)
    assert blobs.put_bytes_if_absent(name, bytes(altered)) is True
    # writing the same pack again (a second ingest home, a retried run) must not replace what is there
    local = tmp_path / "again.mpack"
    local.write_bytes(good)
    store.files.publish(pack["key"], local)
    assert blobs.get_bytes(name) == bytes(altered) and not local.exists()

    shutil.rmtree(samples_root)
    with pytest.raises(PackCorrupt, match=name):
        store.restore(SAMPLE_PROJECT, tmp_path / "out")
    report = store.verify()
    assert not report["ok"] and report["problems"][0]["pack"] == pack["key"]


def test_gc_in_the_bucket_keeps_tombstones_for_the_grace_period(store, samples_root):
    ingest(store, samples_root)
    grow(samples_root / BIG, tag="second")
    ingest(store, samples_root)
    old = [p["key"] for p in store.live_packs(SAMPLE_PROJECT)]
    assert len(old) == 2
    with store.state.connect() as conn:
        stale = dict(conn.execute("SELECT object_id, pack_key FROM pack_index").fetchall())
    result = store.gc_repo(SAMPLE_PROJECT)
    assert result["packs_after"] == 1
    now = datetime.now(UTC)

    assert store.sweep(now)["tombstoned_deleted"] == 0
    assert {BucketPackFiles.name(k) for k in old} <= set(_bucket_packs(store))
    with store.reader(SAMPLE_PROJECT) as reader:
        reader.load(stale)  # an index read from before GC still resolves within the grace period
        swept = store.sweep(now + timedelta(seconds=store.grace_sec + 1))
        assert all(reader.get(oid).raw() for oid in stale)  # and a reader that opened them keeps reading
    assert swept["tombstoned_deleted"] == 2
    assert set(_bucket_packs(store)) == {BucketPackFiles.name(result["consolidated_key"])}
    assert store.verify()["ok"]


def test_a_pack_without_a_row_is_kept_in_a_bucket(store, samples_root, tmp_path):
    ingest(store, samples_root)
    store.files.blobs.put_bytes_if_absent("ab" * 32 + ".mpack", b"pushed by another machine")
    swept = store.sweep(datetime.now(UTC) + timedelta(days=30))
    assert (swept["orphans_deleted"], swept["orphans_kept"]) == (0, 1)
    assert len(_bucket_packs(store)) == 2
