"""Every rule of the provenance write-behind queue, on a real LanceStore in a tmp dir."""

from __future__ import annotations

import atexit
import os
import threading
import time

import pytest

from resources.memory import provenance_queue as pq
from resources.memory.lance import LanceStore
from resources.memory.provenance_queue import ProvenanceWriteQueue
from resources.memory.schema import PROVENANCE, RECORDS, new_record

pytestmark = pytest.mark.unit

N_RECORDS = 20


@pytest.fixture
def store(tmp_path) -> LanceStore:
    store = LanceStore(tmp_path / "lance", provenance_overflow_dir=tmp_path / "overflow")
    store.upsert_records([new_record(f"r{i}", f"text {i}", tier="episodic") for i in range(N_RECORDS)])
    return store


@pytest.fixture
def overflow(tmp_path):
    return tmp_path / "overflow"


def _queue(store, overflow, **kw) -> ProvenanceWriteQueue:
    queue = ProvenanceWriteQueue(store, overflow_dir=overflow, **kw)
    queue.start()
    return queue


def _slow(store, seconds: float, calls: list | None = None):
    """Wrap the store's batch append so every write takes ``seconds`` (and optionally log batch sizes)."""
    real = store.append_provenance_batch

    def slow(pairs, *args, **kwargs):
        time.sleep(seconds)
        if calls is not None:
            calls.append(len(pairs))
        return real(pairs, *args, **kwargs)

    store.append_provenance_batch = slow


def _entries(store, rid: str) -> list[int]:
    return [e["n"] for e in store.get(rid)["provenance"]]


def test_enqueue_never_waits_on_a_slow_write(store, overflow):
    _slow(store, 0.2)
    queue = _queue(store, overflow, coalesce_ms=10)
    latencies = []
    for n in range(200):
        started = time.perf_counter()
        queue.enqueue([(f"r{n % N_RECORDS}", {"n": n})])
        latencies.append(time.perf_counter() - started)
        if n % 50 == 0:
            time.sleep(0.05)  # let a write start, so later enqueues overlap a 200 ms write
    latencies.sort()
    assert latencies[int(len(latencies) * 0.99)] < 0.002
    assert queue.flush(timeout=10)
    queue.stop()
    assert _entries(store, "r3") == list(range(3, 200, N_RECORDS))


def test_pairs_within_the_window_are_one_commit(store, overflow):
    calls: list[int] = []
    _slow(store, 0.0, calls)
    records, version = store.version(RECORDS), store.version(PROVENANCE)
    queue = _queue(store, overflow, coalesce_ms=300)
    for n in range(100):
        queue.enqueue([(f"r{n % N_RECORDS}", {"n": n})])
    assert queue.flush(timeout=10)
    queue.stop()
    assert calls == [100]
    assert store.version(PROVENANCE) == version + 1
    assert store.version(RECORDS) == records  # provenance never rewrites records
    assert queue.stats["batches"] == 1


def test_batches_are_capped_by_max_batch_pairs(store, overflow):
    calls: list[int] = []
    _slow(store, 0.0, calls)
    queue = ProvenanceWriteQueue(store, coalesce_ms=1000, max_batch_pairs=30, overflow_dir=overflow)
    queue.enqueue([(f"r{n % N_RECORDS}", {"n": n}) for n in range(70)])
    queue.start()
    assert queue.flush(timeout=10)
    queue.stop()
    assert calls == [30, 30, 10]


def test_flush_drains_and_order_per_record_is_kept(store, overflow):
    _slow(store, 0.03)
    queue = _queue(store, overflow, coalesce_ms=5)
    for n in range(300):
        queue.enqueue([("r1", {"n": n}), (f"r{2 + n % 5}", {"n": n})])
        if n % 37 == 0:
            time.sleep(0.01)
    assert queue.flush(timeout=20)
    assert queue.pending() == 0
    assert _entries(store, "r1") == list(range(300))
    assert _entries(store, "r2") == list(range(0, 300, 5))
    queue.stop()


def test_full_queue_spills_to_files_then_reloads_them_in_order(store, overflow):
    _slow(store, 0.05)
    queue = _queue(store, overflow, coalesce_ms=1, max_queue_size=4)
    assert not overflow.exists()
    for n in range(60):
        queue.enqueue([("r1", {"n": n})])
    spilled = list(overflow.iterdir())
    assert spilled, "a tiny queue must spill"
    for path in spilled:
        name = path.name
        assert name.endswith(f"-{os.getpid()}.jsonl") and len(name.split("-")[0]) == 26
    assert queue.flush(timeout=30)
    queue.stop()
    assert _entries(store, "r1") == list(range(60))
    assert list(overflow.iterdir()) == []
    assert queue.stats["spilled_files"] == queue.stats["reloaded_files"] > 0


def test_queue_is_bounded_by_bytes(store, overflow):
    _slow(store, 0.2)
    queue = _queue(store, overflow, coalesce_ms=1, max_queue_bytes=2_000)
    big = "x" * 500
    for n in range(20):
        queue.enqueue([("r2", {"n": n, "pad": big})])
    assert queue.stats["spilled_files"] > 0
    assert queue.flush(timeout=30)
    queue.stop()
    assert _entries(store, "r2") == list(range(20))


def test_malformed_spill_file_is_quarantined_once(store, overflow, monkeypatch):
    monkeypatch.setattr(pq, "WORKER_IDLE_POLL_S", 0.05)
    overflow.mkdir()
    bad = overflow / "01ARZ3NDEKTSV4RRFFQ69G5FAV-999.jsonl"
    bad.write_text('{"id": "r1", "entry": {"n": 1}}\nnot json at all\n')
    good = overflow / "01ARZ3NDEKTSV4RRFFQ69G5FAW-999.jsonl"
    good.write_text('{"id": "r4", "entry": {"n": 41}}\n')
    queue = _queue(store, overflow, coalesce_ms=1)
    deadline = time.monotonic() + 10
    while good.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert queue.flush(timeout=10)
    failed = sorted(overflow.iterdir())
    assert len(failed) == 1 and ".failed-" in failed[0].name and failed[0].name.endswith(".jsonl")
    assert not bad.exists()
    time.sleep(0.3)  # several idle polls later, the quarantined file is left alone
    assert sorted(overflow.iterdir()) == failed
    queue.stop()
    assert sorted(overflow.iterdir()) == failed
    assert _entries(store, "r4") == [41]
    assert _entries(store, "r1") == []
    assert queue.stats["failed_files"] == 1


def test_failing_write_is_retried_with_backoff(store, overflow):
    real = store.append_provenance_batch
    failures = {"left": 2}

    def flaky(pairs, *args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("store briefly unavailable")
        return real(pairs, *args, **kwargs)

    store.append_provenance_batch = flaky
    queue = _queue(store, overflow, coalesce_ms=1, retry_backoff_s=0.01)
    queue.enqueue([("r5", {"n": 1})])
    assert queue.flush(timeout=10)
    queue.stop()
    assert queue.stats["retries"] == 2
    assert _entries(store, "r5") == [1]
    assert not overflow.exists()


def _commits_then_raises(store, times: int):
    """Wrap the batch append so its first ``times`` calls commit and then raise, like a lost reply."""
    real = store.append_provenance_batch
    left = {"n": times}

    def lands_then_fails(pairs, *args, **kwargs):
        written = real(pairs, *args, **kwargs)
        if left["n"]:
            left["n"] -= 1
            raise OSError("committed, but the caller never heard")
        return written

    store.append_provenance_batch = lands_then_fails


def test_a_retry_after_a_write_that_landed_appends_nothing_twice(store, overflow):
    _commits_then_raises(store, 2)
    queue = _queue(store, overflow, coalesce_ms=1, retry_backoff_s=0.01)
    queue.enqueue([("r5", {"n": 1}), ("r5", {"n": 2}), ("r6", {"n": 3})])
    assert queue.flush(timeout=10)
    queue.stop()
    assert queue.stats["retries"] == 2
    assert _entries(store, "r5") == [1, 2]
    assert _entries(store, "r6") == [3]
    assert store.count(PROVENANCE) == 3


def test_a_spilled_batch_that_had_landed_is_not_appended_again_on_reload(store, overflow):
    _commits_then_raises(store, 3)  # every attempt of the first batch lands and raises: it is spilled
    queue = _queue(store, overflow, coalesce_ms=1, max_retries=2, retry_backoff_s=0.005)
    queue.enqueue([("r7", {"n": n}) for n in range(4)])
    deadline = time.monotonic() + 10
    while not queue.stats["spilled_files"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert queue.stats["spilled_files"] == 1
    queue.enqueue([("r7", {"n": 4})])  # spilled behind the first file, to keep the order
    assert queue.flush(timeout=10)  # reloads both files and writes them, skipping what landed
    queue.stop()
    assert _entries(store, "r7") == [0, 1, 2, 3, 4]
    assert queue.stats["reloaded_files"] == queue.stats["spilled_files"] == 2


def test_spill_files_written_before_entry_ids_still_load(store, overflow):
    overflow.mkdir()
    (overflow / "01ARZ3NDEKTSV4RRFFQ69G5FAW-999.jsonl").write_text('{"id": "r4", "entry": {"n": 41}}\n')
    queue = _queue(store, overflow, coalesce_ms=1)
    queue.flush(timeout=10)
    queue.stop(timeout=10)
    assert _entries(store, "r4") == [41]
    assert list(overflow.iterdir()) == []


def test_failing_store_spills_never_drops_never_raises(store, overflow):
    real = store.append_provenance_batch
    down = threading.Event()
    down.set()

    def maybe_down(pairs, *args, **kwargs):
        if down.is_set():
            raise OSError("disk full")
        return real(pairs, *args, **kwargs)

    store.append_provenance_batch = maybe_down
    queue = _queue(store, overflow, coalesce_ms=1, max_retries=2, retry_backoff_s=0.005)
    for n in range(10):
        queue.enqueue([("r6", {"n": n})])  # never raises
    assert queue.flush(timeout=0.3) is False
    assert any(overflow.iterdir()), "what could not be written is on disk"
    down.clear()
    assert queue.flush(timeout=10)
    queue.stop()
    assert _entries(store, "r6") == list(range(10))
    assert list(overflow.iterdir()) == []


def test_stop_spills_when_the_store_is_down_and_a_new_queue_recovers(store, overflow):
    real = store.append_provenance_batch

    def down(pairs, *args, **kwargs):
        raise OSError("store gone")

    store.append_provenance_batch = down
    queue = _queue(store, overflow, coalesce_ms=500, max_retries=1, retry_backoff_s=0.001)
    queue.enqueue([("r7", {"n": n}) for n in range(5)])
    queue.stop()
    assert len(list(overflow.iterdir())) >= 1
    store.append_provenance_batch = real
    recovered = _queue(store, overflow, coalesce_ms=1)
    assert recovered.flush(timeout=10)  # drains the spill files of the earlier queue
    recovered.stop()
    assert _entries(store, "r7") == list(range(5))
    assert list(overflow.iterdir()) == []


def test_atexit_handler_flushes_everything(store, overflow, monkeypatch):
    handlers = []
    monkeypatch.setattr(atexit, "register", lambda fn, *a, **kw: handlers.append(fn))
    _slow(store, 0.1)
    queue = _queue(store, overflow, coalesce_ms=5_000)  # nothing would be written for 5 s on its own
    queue.enqueue([("r8", {"n": n}) for n in range(3)])
    assert len(handlers) == 1
    handlers[0]()  # what interpreter exit runs
    assert _entries(store, "r8") == [0, 1, 2]
    assert queue.pending() == 0
