"""PackStore on real files and a real DuckDB: packs, GC, sweep, fetch, restore, refusal of altered packs."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack
import pytest

from resources.archive.pack_format import (
    PackCorrupt,
    PackError,
    Snapshot,
    StoredObject,
    compress,
    object_id,
    write_pack,
)
from tests.archive_support import grow, ingest, pack_store, rewrite, session_files
from tests.conftest import SAMPLE_PROJECT

pytestmark = pytest.mark.unit

BIG = f"{SAMPLE_PROJECT}/d3ad4cdc-5657-435d-98fa-0035d53e383d.jsonl"
SMALL = f"{SAMPLE_PROJECT}/fed8ce56-bc79-401f-a83e-af084253362f.jsonl"


@pytest.fixture
def store(settings):
    return pack_store(settings)


def _three_ingests(store, root: Path) -> None:
    ingest(store, root)
    grow(root / BIG, tag="second-big")
    grow(root / SMALL, tag="second-small")
    ingest(store, root)
    grow(root / BIG, tag="third")
    ingest(store, root)


def _index_rows(store) -> list[tuple]:
    with store.state.connect() as conn:
        return conn.execute("SELECT repo, object_id, pack_key FROM pack_index ORDER BY ALL").fetchall()


def test_three_growing_ingests_make_three_packs_and_gc_makes_one_holding_every_object(store, samples_root):
    _three_ingests(store, samples_root)
    before = store.live_packs(SAMPLE_PROJECT)
    assert len(before) == 3
    objects_before = {oid for _, oid, _ in _index_rows(store)}
    # the grown files added only their tails: the last pack holds one new object, the third-ingest tail
    assert before[-1]["object_count"] == 1

    result = store.gc_repo(SAMPLE_PROJECT)

    assert result["skipped"] is False
    assert (result["packs_before"], result["packs_after"]) == (3, 1)
    after = store.live_packs(SAMPLE_PROJECT)
    assert [p["key"] for p in after] == [result["consolidated_key"]]
    rows = _index_rows(store)
    assert {oid for _, oid, _ in rows} == objects_before
    assert {key for _, _, key in rows} == {result["consolidated_key"]}
    assert after[0]["object_count"] == len(objects_before)
    assert store.verify()["ok"]
    assert len(store.versions(SAMPLE_PROJECT)) == 4 + 2 + 1


def test_gc_twice_gives_the_same_key_and_no_duplicate_rows(store, samples_root):
    _three_ingests(store, samples_root)
    first = store.gc_repo(SAMPLE_PROJECT)
    second = store.gc_repo(SAMPLE_PROJECT)
    assert second["skipped"] is True
    assert second["consolidated_key"] == first["consolidated_key"]
    rows = _index_rows(store)
    assert len(rows) == len({(repo, oid) for repo, oid, _ in rows})


def test_single_pack_repo_is_skipped(store, samples_root):
    ingest(store, samples_root)
    [only] = store.live_packs(SAMPLE_PROJECT)
    result = store.gc_repo(SAMPLE_PROJECT)
    assert result == {"repo": SAMPLE_PROJECT, "packs_before": 1, "packs_after": 1,
                      "consolidated_key": only["key"], "skipped": True}
    assert store.gc_repo("no-such-project")["consolidated_key"] is None


def test_consolidation_is_deterministic_across_homes(settings, samples_root, tmp_path):
    store = pack_store(settings)
    _three_ingests(store, samples_root)
    twin_home = tmp_path / "twin"
    shutil.copytree(settings.home, twin_home)
    twin = type(store)(twin_home / "packs", type(store.state)(twin_home / "state.duckdb"))
    assert store.gc_repo(SAMPLE_PROJECT)["consolidated_key"] == twin.gc_repo(SAMPLE_PROJECT)["consolidated_key"]


def test_fetch_before_and_after_gc_returns_the_same_objects(store, samples_root, tmp_path):
    _three_ingests(store, samples_root)
    want = [BIG, SMALL]
    before = store.fetch(SAMPLE_PROJECT, want, dest_dir=tmp_path / "f1")
    store.gc_repo(SAMPLE_PROJECT)
    after = store.fetch(SAMPLE_PROJECT, want, dest_dir=tmp_path / "f2")
    assert before["object_count"] == after["object_count"] == 3 + 2
    assert before["snapshot_count"] == after["snapshot_count"] == 5
    assert before["key"] == after["key"]
    assert Path(after["path"]).read_bytes() == Path(before["path"]).read_bytes()

    [first_big] = [v.snapshot for v in store.versions(SAMPLE_PROJECT, BIG)][:1]
    thin = store.fetch(SAMPLE_PROJECT, [BIG], have=first_big.chunks, dest_dir=tmp_path / "f3")
    assert thin["object_count"] == 2  # only the two tails the receiver does not have
    with pytest.raises(PackError, match="no archived version"):
        store.fetch(SAMPLE_PROJECT, ["nope.jsonl"], dest_dir=tmp_path / "f4")


def test_restore_after_delete_is_byte_identical_for_grown_and_rewritten_files(store, samples_root, tmp_path):
    ingest(store, samples_root)
    grow(samples_root / BIG, tag="grown")
    rewrite(samples_root / SMALL)
    ingest(store, samples_root)
    store.gc_repo(SAMPLE_PROJECT)
    originals = session_files(samples_root)
    mtimes = {k: (samples_root / k).stat().st_mtime_ns for k in originals}
    shutil.rmtree(samples_root)

    out = tmp_path / "restored"
    results = store.restore(SAMPLE_PROJECT, out)

    assert {r["status"] for r in results} == {"restored"}
    assert session_files(out) == originals
    assert {k: (out / k).stat().st_mtime_ns for k in originals} == mtimes
    # running it again finds identical files and writes nothing
    assert {r["status"] for r in store.restore(SAMPLE_PROJECT, out)} == {"identical"}


def test_rewritten_file_is_stored_whole_and_old_versions_restore_by_time(store, samples_root, tmp_path):
    ingest(store, samples_root)
    old_bytes = (samples_root / SMALL).read_bytes()
    old_mtime = (samples_root / SMALL).stat().st_mtime_ns
    rewrite(samples_root / SMALL)
    os.utime(samples_root / SMALL, ns=(old_mtime + 10**9, old_mtime + 10**9))
    ingest(store, samples_root)
    first, second = [v.snapshot for v in store.versions(SAMPLE_PROJECT, SMALL)]
    assert not set(first.chunks) & set(second.chunks)

    at = datetime.fromtimestamp(old_mtime / 1e9, UTC) + timedelta(milliseconds=1)
    store.restore(SAMPLE_PROJECT, tmp_path / "then", session_key=SMALL, at=at)
    assert (tmp_path / "then" / SMALL).read_bytes() == old_bytes
    with pytest.raises(PackError, match="at or before"):
        store.restore(SAMPLE_PROJECT, tmp_path / "x", session_key=SMALL, at=at - timedelta(days=1))


def test_restore_never_overwrites_a_different_file(store, samples_root):
    ingest(store, samples_root)
    grow(samples_root / SMALL, tag="live-edit")
    results = {r["session_key"]: r["status"] for r in store.restore(SAMPLE_PROJECT, samples_root)}
    assert results[SMALL] == "conflict"
    assert results[BIG] == "identical"
    assert (samples_root / SMALL).read_bytes().endswith(b'"live-edit 2"}}\n')


def test_altered_pack_is_refused(store, samples_root, tmp_path):
    ingest(store, samples_root)
    [pack] = store.live_packs(SAMPLE_PROJECT)
    path = store.packs_dir / f"{pack['key'].split(':')[1]}.mpack"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    shutil.rmtree(samples_root)

    with pytest.raises(PackCorrupt, match=path.name):
        store.restore(SAMPLE_PROJECT, tmp_path / "out")
    assert not (tmp_path / "out" / BIG).exists()
    report = store.verify()
    assert not report["ok"]
    assert report["problems"][0]["pack"] == pack["key"]


def test_sweep_respects_the_grace_period(store, samples_root):
    _three_ingests(store, samples_root)
    old = [p["key"] for p in store.live_packs(SAMPLE_PROJECT)]
    # a reader resolves object locations, then GC runs under it
    stale = store.index_lookup(SAMPLE_PROJECT, [oid for _, oid, _ in _index_rows(store)])
    store.gc_repo(SAMPLE_PROJECT)
    now = datetime.now(UTC)

    assert store.sweep(now)["tombstoned_deleted"] == 0
    assert all((store.packs_dir / f"{k.split(':')[1]}.mpack").exists() for k in old)
    with store.reader(SAMPLE_PROJECT) as reader:
        reader.load(stale)  # the old files are still there within the grace period

    swept = store.sweep(now + timedelta(seconds=store.grace_sec + 1))
    assert swept["tombstoned_deleted"] == 3
    assert not any((store.packs_dir / f"{k.split(':')[1]}.mpack").exists() for k in old)
    with store.state.connect() as conn:
        assert conn.execute("SELECT count(*) FROM packs").fetchone()[0] == 1
    with store.reader(SAMPLE_PROJECT) as reader:
        reader.load(stale)  # the files are gone: the reader re-reads the index once and finds the new pack
        assert all(reader.get(oid).raw() for oid in stale)
    assert store.verify()["ok"]


def test_sweep_removes_only_old_orphans_and_temp_files(store, samples_root):
    ingest(store, samples_root)
    orphan_key, orphan, _ = write_pack(store.packs_dir, [], 0, [], 0)
    temp = store.packs_dir / ".abandoned.mpack.tmp"
    temp.write_bytes(b"partial")
    assert store.sweep()["orphans_deleted"] == 0
    hour_ago = (datetime.now(UTC) - timedelta(seconds=store.grace_sec + 5)).timestamp()
    for path in (orphan, temp):
        os.utime(path, (hour_ago, hour_ago))
    result = store.sweep()
    assert (result["orphans_deleted"], result["temp_deleted"]) == (1, 1)
    assert not orphan.exists() and not temp.exists()
    assert len(store.live_packs()) == 1 and store.verify()["ok"]


def test_pack_encoding_is_deterministic_and_checks_order(tmp_path):
    chunks = [b"alpha\n" * 100, b"beta\n", b"gamma\n" * 7]
    objects = sorted((StoredObject(object_id(c), *compress(c)[:1], len(c), compress(c)[1]) for c in chunks),
                     key=lambda o: o.object_id)
    snap = Snapshot("p/s.jsonl", sum(map(len, chunks)), "ab" * 32, 5, tuple(o.object_id for o in objects))
    k1, p1, _ = write_pack(tmp_path / "a", objects, 3, [snap], 1)
    k2, p2, _ = write_pack(tmp_path / "b", objects, 3, [snap], 1)
    assert k1 == k2 and p1.read_bytes() == p2.read_bytes()
    document = msgpack.unpackb(p1.read_bytes())  # plain msgpack: any reader can open a pack
    assert document["format"] == "sessionlake-pack" and document["version"] == 1
    assert [o["content"] for o in document["objects"]] == [o.content for o in objects]
    assert document["snapshots"] == [snap.as_map()]
    assert p1.name == f"{k1.split(':')[1]}.mpack"
    assert {o.raw() for o in objects} == set(chunks)
    with pytest.raises(ValueError, match="out of order"):
        write_pack(tmp_path / "c", list(reversed(objects)), 3, [], 0)
    assert not [p for p in (tmp_path / "c").iterdir()]  # the temp file of the failed write is gone


def test_gc_refuses_an_altered_pack_and_changes_nothing(store, samples_root):
    _three_ingests(store, samples_root)
    packs = store.live_packs(SAMPLE_PROJECT)
    path = store.packs_dir / f"{packs[0]['key'].split(':')[1]}.mpack"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x20
    path.write_bytes(bytes(data))
    rows = _index_rows(store)

    with pytest.raises(PackCorrupt, match=path.name):
        store.gc_repo(SAMPLE_PROJECT)

    assert store.live_packs(SAMPLE_PROJECT) == packs
    assert _index_rows(store) == rows
    assert len(list(store.packs_dir.glob("*.mpack"))) == 3 and not list(store.packs_dir.glob(".*"))


def test_every_pack_of_a_commit_is_durable_before_it_is_registered_with_one_folder_fsync(store, samples_root,
                                                                                        monkeypatch):
    """Three projects make three packs in one commit: each pack file is fsynced, then the packs folder once for
    all their names, and only then does the index register them."""
    import resources.archive.pack_index as pack_index

    for n in (1, 2):
        shutil.copytree(samples_root / SAMPLE_PROJECT, samples_root / f"{SAMPLE_PROJECT}-{n}")
    events: list[tuple[str, str]] = []
    fsync, register = os.fsync, pack_index.register

    def recording_fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("dir" if os.path.isdir(path) else "file", path))
        return fsync(fd)

    def recording_register(conn, packs, **kwargs):
        events.append(("register", ",".join(sorted(p.key for p in packs))))
        return register(conn, packs, **kwargs)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(pack_index, "register", recording_register)
    stats = ingest(store, samples_root)
    packs_dir = str(store.packs_dir.resolve())
    mine = [(kind, path) for kind, path in events if kind == "register" or path.startswith(packs_dir)]
    assert stats["packs_written"] == 3
    assert [kind for kind, _ in mine] == ["file", "file", "file", "dir", "register"]
    assert mine[3][1] == packs_dir
    assert len(list(store.packs_dir.glob("*.mpack"))) == 3
