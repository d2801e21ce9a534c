"""CaptureQueue on a real folder: durability, ordering, locking, overflow, corruption, schema checks."""

from __future__ import annotations

import fcntl
import json
import os
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from resources.capture.queue import (
    SCHEMA_VERSION,
    CaptureQueue,
    CaptureQueueSchemaError,
    CaptureRecordError,
    generate_ulid,
    ulid_or_none,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid_ms(ulid: str) -> int:
    value = 0
    for char in ulid[:10]:
        value = value * 32 + CROCKFORD.index(char)
    return value


def _envelopes(queue: CaptureQueue) -> list[dict]:
    return [json.loads(p.read_bytes()) for p in queue.list_pending()]


@pytest.fixture
def queue(tmp_path) -> CaptureQueue:
    return CaptureQueue(tmp_path / "capture")


def test_append_publishes_one_wellformed_envelope(queue):
    ulid = queue.append({"text": "hello", "session_id": "s1"})
    assert len(ulid) == 26 and set(ulid) <= set(CROCKFORD)
    [path] = queue.list_pending()
    assert path.name == f"pending-{ulid}.json" and ulid_or_none(path) == ulid
    envelope = json.loads(path.read_bytes())
    assert envelope["ulid"] == ulid and envelope["schema_version"] == SCHEMA_VERSION
    assert envelope["record"] == {"text": "hello", "session_id": "s1"}
    assert abs(datetime.fromisoformat(envelope["appended_at"]).timestamp() - time.time()) < 60
    assert queue.pending_count() == 1
    assert not [n for n in os.listdir(queue.dir) if n.startswith(".tmp-")]


def test_files_are_private(queue):
    queue.append({"text": "secret"})
    assert stat.S_IMODE(queue.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(queue.overflow_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(queue.list_pending()[0].stat().st_mode) == 0o600


def test_text_survives_byte_for_byte(queue):
    text = "Привет, мир 😀👩‍👩‍👧 é (e\u0301) Ελληνικά ∑∞≠√ ™©® \u00a0tab\tnewline\n\"quote\" \\ back"
    queue.append({"text": text})
    stored = queue.list_pending()[0].read_bytes()
    assert text.split("tab")[0].encode("utf-8") in stored  # non-ASCII stored as raw UTF-8, not \\u escapes
    got = []
    assert queue.ingest_pending(got.append) == 1
    assert got[0]["text"] == text and got[0]["text"].encode("utf-8") == text.encode("utf-8")


def test_large_records_round_trip(queue):
    sizes = [65_400, 65_536 - 100, 300_000]  # around and past one read buffer
    for size in sizes:
        queue.append({"text": "é" * size})
    got = []
    assert queue.ingest_pending(got.append) == 3
    assert [r["text"] for r in got] == ["é" * size for size in sizes]


@pytest.mark.parametrize("record, reason", [
    (["not", "an", "object"], "JSON object"),
    ({"text": {1, 2}}, "not JSON-serialisable"),
    ({"x": float("nan")}, "not JSON-serialisable"),
    ({"text": "lone surrogate \ud800"}, "not JSON-serialisable"),
    ({"text": "x" * 2000}, "over the 1,024-byte limit"),
])
def test_bad_records_are_refused_and_nothing_is_written(tmp_path, record, reason):
    queue = CaptureQueue(tmp_path / "capture", max_record_bytes=1024)
    queue.append({"text": "kept"})
    with pytest.raises(CaptureRecordError, match=reason):
        queue.append(record)
    assert queue.pending_count() == 1
    assert sorted(n for n in os.listdir(queue.dir) if n.startswith(("pending-", ".tmp-"))) == [
        queue.list_pending()[0].name]


def test_failed_rename_publishes_nothing_and_cleans_up(queue, monkeypatch):
    queue.append({"text": "first"})

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        queue.append({"text": "lost"})
    monkeypatch.undo()
    assert queue.pending_count() == 1
    assert not [n for n in os.listdir(queue.dir) if n.startswith(".tmp-")]
    assert [e["record"]["text"] for e in _envelopes(queue)] == ["first"]


def test_append_never_lists_the_folder(queue, monkeypatch):
    for i in range(50):
        queue.append({"text": str(i)})

    def no_listing(*args, **kwargs):
        raise AssertionError("append listed the folder")

    monkeypatch.setattr(os, "scandir", no_listing)
    monkeypatch.setattr(os, "listdir", no_listing)
    queue.append({"text": "at depth 50"})
    CaptureQueue(queue.dir).append({"text": "a fresh instance on an existing queue"})
    monkeypatch.undo()
    assert queue.pending_count() == 52


def test_ulids_sort_in_generation_order_without_collisions():
    ulids = [generate_ulid() for _ in range(1000)]
    assert ulids == sorted(ulids) and len(set(ulids)) == 1000
    assert len({u[:10] for u in ulids}) < 1000  # many shared a millisecond, still ordered


def test_ulid_burst_stays_on_the_clock():
    before = time.time_ns() // 1_000_000
    ulids = [generate_ulid() for _ in range(100_000)]
    after = time.time_ns() // 1_000_000
    assert ulids == sorted(ulids) and len(set(ulids)) == len(ulids)
    assert before <= _ulid_ms(ulids[0]) and _ulid_ms(ulids[-1]) <= after + 2


def test_ulids_are_unique_and_ordered_across_threads():
    per_thread: list[list[str]] = [[] for _ in range(8)]

    def work(out):
        out.extend(generate_ulid() for _ in range(2000))

    threads = [threading.Thread(target=work, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [u for out in per_thread for u in out]
    assert len(set(everything)) == len(everything)
    assert all(out == sorted(out) for out in per_thread)


def test_fifty_threads_appending_at_once(queue):
    errors, ulids = [], []
    lock = threading.Lock()

    def work(n):
        try:
            for i in range(10):
                ulid = queue.append({"text": f"thread {n} item {i}"})
                with lock:
                    ulids.append(ulid)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(ulids) == 500 and len(set(ulids)) == 500
    envelopes = _envelopes(queue)
    assert len(envelopes) == 500 and {e["ulid"] for e in envelopes} == set(ulids)
    assert all(e["schema_version"] == SCHEMA_VERSION and e["record"]["text"].startswith("thread ") for e in envelopes)
    # each thread's own appends come out in the order it made them
    texts = [e["record"]["text"] for e in envelopes]
    for n in range(50):
        mine = [t for t in texts if t.startswith(f"thread {n} ")]
        assert mine == [f"thread {n} item {i}" for i in range(10)]


def _spawn_appenders(queue_dir: Path, processes: int, each: int, max_size: int) -> list[str]:
    code = (
        "import sys\nfrom resources.capture.queue import CaptureQueue\n"
        f"q = CaptureQueue(sys.argv[1], max_size={max_size})\n"
        f"print('\\n'.join(q.append({{'text': f'p{{sys.argv[2]}} {{i}}'}}) for i in range({each})))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(queue_dir), str(p)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in range(processes)]
    ulids = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        ulids += out.split()
    return ulids


@pytest.mark.integration  # other processes
def test_several_processes_appending_at_once(tmp_path):
    queue = CaptureQueue(tmp_path / "capture")
    ulids = _spawn_appenders(queue.dir, processes=4, each=100, max_size=10_000)
    assert len(ulids) == 400 and len(set(ulids)) == 400
    assert {e["ulid"] for e in _envelopes(queue)} == set(ulids)


@pytest.mark.integration  # other processes
def test_several_processes_overflowing_lose_nothing(tmp_path):
    queue = CaptureQueue(tmp_path / "capture", max_size=50)
    ulids = _spawn_appenders(queue.dir, processes=4, each=60, max_size=50)
    moved = {p.name for p in queue.list_overflow()}
    audit = [json.loads(line) for line in queue.overflow_audit_log.read_text().splitlines()]
    assert queue.pending_count() == 50
    assert len(ulids) == queue.pending_count() + len(moved) == 240
    assert {f"pending-{a['dropped_ulid']}.json" for a in audit} == moved and len(audit) == len(moved)


def test_overflow_moves_only_the_excess_oldest_first_and_requeues(tmp_path):
    queue = CaptureQueue(tmp_path / "capture", max_size=100)
    ulids = [queue.append({"text": f"r{i}"}) for i in range(110)]
    assert queue.pending_count() == 100
    assert [ulid_or_none(p) for p in queue.list_overflow()] == ulids[:10]
    assert [ulid_or_none(p) for p in queue.list_pending()] == ulids[10:]
    audit = [json.loads(line) for line in queue.overflow_audit_log.read_text().splitlines()]
    assert [a["dropped_ulid"] for a in audit] == ulids[:10]
    assert all(a["reason"] == "queue_overflow" and a["queue_size_before_prune"] == 101 and a["ts"] for a in audit)
    assert queue.requeue_overflow() == 10
    assert [ulid_or_none(p) for p in queue.list_pending()] == ulids and queue.list_overflow() == []


@pytest.mark.parametrize("max_size, appends", [(1, 5), (7, 20), (1000, 1003)])
def test_overflow_keeps_exactly_max_size(tmp_path, max_size, appends):
    queue = CaptureQueue(tmp_path / "capture", max_size=max_size)
    for i in range(appends):
        queue.append({"text": str(i)})
    moved = len(queue.list_overflow())
    assert queue.pending_count() == max_size and moved == appends - max_size
    assert len(queue.overflow_audit_log.read_text().splitlines()) == moved


def test_overflow_counts_stay_right_after_a_drain(tmp_path):
    queue = CaptureQueue(tmp_path / "capture", max_size=10)
    for i in range(15):
        queue.append({"text": str(i)})
    assert queue.ingest_pending(lambda record: None) == 10
    for i in range(12):
        queue.append({"text": f"again {i}"})
    assert queue.pending_count() == 10 and len(queue.list_overflow()) == 7


def test_ingest_oldest_first_and_empty_queue(queue):
    assert queue.ingest_pending(lambda record: None) == 0
    for i in range(5):
        queue.append({"text": str(i)})
    seen = []
    assert queue.ingest_pending(seen.append) == 5
    assert [r["text"] for r in seen] == ["0", "1", "2", "3", "4"]
    assert queue.pending_count() == 0
    assert not list(queue.dir.glob("pending-*"))


def test_batched_ingest_hands_out_envelopes_in_batches(queue):
    ulids = [queue.append({"text": str(i)}) for i in range(7)]
    batches = []
    assert queue.ingest_batches(lambda batch: batches.append(batch), batch_size=3) == 7
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [e.ulid for b in batches for e in b] == ulids
    assert batches[0][0].record == {"text": "0"} and batches[0][0].appended_at


def test_batches_are_cut_by_bytes_too(queue, monkeypatch):
    import resources.capture.queue as capture_queue

    monkeypatch.setattr(capture_queue, "MAX_BATCH_BYTES", 1000)
    for i in range(6):
        queue.append({"text": str(i) * 300})  # ~400-byte envelopes
    batches = []
    assert queue.ingest_batches(batches.append, batch_size=100) == 6
    assert [len(b) for b in batches] == [3, 3]


def test_envelope_locked_by_another_descriptor_is_skipped(queue):
    ulids = [queue.append({"text": str(i)}) for i in range(3)]
    held = os.open(queue.dir / f"pending-{ulids[1]}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        seen = []
        assert queue.ingest_pending(seen.append) == 2
        assert [r["text"] for r in seen] == ["0", "2"]
        assert [ulid_or_none(p) for p in queue.list_pending()] == [ulids[1]]
    finally:
        os.close(held)
    assert queue.ingest_pending(seen.append) == 1 and seen[-1] == {"text": "1"}
    assert not list(queue.dir.glob("pending-*"))


def test_handler_failure_leaves_files_then_retry_succeeds(queue):
    ulids = [queue.append({"text": str(i)}) for i in range(3)]
    calls = []

    def flaky(record):
        calls.append(record["text"])
        if record["text"] == "1" and calls.count("1") == 1:
            raise RuntimeError("lance is down")

    with pytest.raises(RuntimeError, match="lance is down"):
        queue.ingest_pending(flaky)
    # the first was done; the failed one keeps its envelope and its lock (crash mid-flight marker)
    assert [ulid_or_none(p) for p in queue.list_pending()] == ulids[1:]
    assert (queue.dir / f"pending-{ulids[1]}.lock").exists()
    assert not (queue.dir / f"pending-{ulids[0]}.lock").exists()
    assert queue.ingest_pending(flaky) == 2
    assert calls == ["0", "1", "1", "2"]
    assert not list(queue.dir.glob("pending-*"))


def test_failed_batch_keeps_its_files_and_locks_earlier_batches_stay_done(queue):
    ulids = [queue.append({"text": str(i)}) for i in range(6)]
    handed = []

    def second_batch_fails(batch):
        handed.append([e.ulid for e in batch])
        if len(handed) == 2:
            raise RuntimeError("commit failed")

    with pytest.raises(RuntimeError, match="commit failed"):
        queue.ingest_batches(second_batch_fails, batch_size=2)
    assert [ulid_or_none(p) for p in queue.list_pending()] == ulids[2:]
    assert sorted(ulid_or_none(p) for p in queue.dir.glob("pending-*.lock")) == ulids[2:4]
    assert queue.ingest_batches(lambda batch: handed.append([e.ulid for e in batch]), batch_size=2) == 4
    assert handed[2:] == [ulids[2:4], ulids[4:6]]
    assert not list(queue.dir.glob("pending-*"))


def test_unknown_schema_version_stays_and_the_rest_drains(queue):
    first = queue.append({"text": "before"})
    future = queue.dir / f"pending-{generate_ulid()}.json"
    future.write_text(json.dumps({"ulid": ulid_or_none(future), "schema_version": 99, "record": {"text": "x"}}))
    last = queue.append({"text": "after"})
    seen = []
    with pytest.raises(CaptureQueueSchemaError, match=r"schema_version 99"):
        queue.ingest_pending(seen.append)
    assert seen == [{"text": "before"}, {"text": "after"}]
    assert queue.list_pending() == [future]
    assert not future.with_suffix(".lock").exists()
    assert first != last


def test_corrupt_envelope_goes_to_corrupt_and_never_blocks(queue):
    queue.append({"text": "a"})
    bad = queue.dir / f"pending-{generate_ulid()}.json"
    bad.write_bytes(b'{"ulid": "trunc')
    not_utf8 = queue.dir / f"pending-{generate_ulid()}.json"
    not_utf8.write_bytes(b"\xff\xfe garbage")
    queue.append({"text": "b"})
    seen = []
    assert queue.ingest_pending(seen.append) == 2
    assert [r["text"] for r in seen] == ["a", "b"]
    assert sorted(p.name for p in queue.corrupt_dir.iterdir()) == sorted([bad.name, not_utf8.name])
    assert (queue.corrupt_dir / bad.name).read_bytes() == b'{"ulid": "trunc'  # kept as found
    audit = [json.loads(line) for line in queue.corrupt_audit_log.read_text().splitlines()]
    assert {a["ulid"] for a in audit} == {ulid_or_none(bad), ulid_or_none(not_utf8)}
    assert all("invalid JSON" in a["error"] for a in audit)
    assert queue.pending_count() == 0 and not list(queue.dir.glob("pending-*.lock"))


def test_leftovers_of_dead_writers_are_swept(queue):
    queue.append({"text": "live"})
    stale_temp = queue.dir / ".tmp-01ARZ3NDEKTSV4RRFFQ69G5FAV.json"
    stale_temp.write_text("half written")
    os.utime(stale_temp, (time.time() - 7200, time.time() - 7200))
    fresh_temp = queue.dir / ".tmp-01ARZ3NDEKTSV4RRFFQ69G5FAW.json"
    fresh_temp.write_text("being written right now")
    orphan_lock = queue.dir / "pending-01ARZ3NDEKTSV4RRFFQ69G5FAX.lock"
    orphan_lock.touch()
    assert queue.ingest_pending(lambda record: None) == 1
    assert not stale_temp.exists() and fresh_temp.exists() and not orphan_lock.exists()


def test_from_settings_uses_the_capture_knobs(tmp_path):
    from resources.config.settings import Settings

    settings = Settings(home=tmp_path, sessions_dir=tmp_path / "s", capture_max_size=3, capture_max_record_bytes=64)
    queue = CaptureQueue.from_settings(settings)
    assert queue.dir == tmp_path / "capture" and queue.max_size == 3 and queue.max_record_bytes == 64


def test_ulid_or_none_rejects_other_names():
    assert ulid_or_none("/x/pending-short.json") is None
    assert ulid_or_none(".depth") is None
    assert ulid_or_none(f"/x/pending-{'a' * 26}.json") is None  # 26 characters, but not ULID characters
    assert ulid_or_none("/x/pending-01ARZ3NDEKTSV4RRFFQ69G5FAV.lock") == "01ARZ3NDEKTSV4RRFFQ69G5FAV"


@pytest.mark.parametrize("middle", ["a" * 26, "01ARZ3NDEKTSV4RRFFQ69G5FA!", "ILOU" * 6 + "00"])
def test_a_foreign_pending_file_goes_to_corrupt_with_an_audit_line_and_no_lock(queue, middle):
    queue.append({"text": "before"})
    foreign = queue.dir / f"pending-{middle}.json"
    foreign.write_text('{"not": "ours"}')
    queue.append({"text": "after"})
    seen = []
    assert queue.ingest_pending(seen.append) == 2
    assert [r["text"] for r in seen] == ["before", "after"]
    assert not foreign.exists() and (queue.corrupt_dir / foreign.name).read_text() == '{"not": "ours"}'
    [audit] = [json.loads(line) for line in queue.corrupt_audit_log.read_text().splitlines()]
    assert audit["ulid"] == middle and "not pending-<ULID>.json" in audit["error"] and audit["moved_to"] == "corrupt"
    assert list(queue.dir.glob("pending-*.lock")) == [] and queue.pending_count() == 0
    assert queue.ingest_pending(seen.append) == 0  # nothing left to trip over


@pytest.mark.integration  # other processes
def test_drainer_killed_mid_flight_is_retried(queue):
    ulid = queue.append({"text": "in flight when the process died"})
    code = ("import os, sys\nfrom resources.capture.queue import CaptureQueue\n"
            "CaptureQueue(sys.argv[1]).ingest_pending(lambda record: os._exit(9))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(queue.dir)], cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == 9
    assert (queue.dir / f"pending-{ulid}.lock").exists() and queue.pending_count() == 1
    seen = []
    assert queue.ingest_pending(seen.append) == 1
    assert seen == [{"text": "in flight when the process died"}]
    assert not list(queue.dir.glob("pending-*"))


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")  # the children only make ULIDs
def test_forked_producers_never_share_a_ulid(monkeypatch):
    from resources import ids

    frozen = time.time_ns()
    monkeypatch.setattr(ids.time, "time_ns", lambda: frozen)  # every child in the parent's millisecond
    new_ulid = ids.new_ulid
    read, write = os.pipe()
    children = []
    new_ulid()  # the parent has a "last" ULID that every child inherits
    for _ in range(50):
        pid = os.fork()
        if pid == 0:
            os.write(write, (new_ulid() + "\n").encode())
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    os.close(write)
    with os.fdopen(read) as f:
        ids = f.read().split()
    assert len(ids) == 50 and len(set(ids)) == 50
